"""The reconnect storm's client process: many sessions of the project's client library.

Each session is ``ChatClient(...).session()`` (``chatd/client/session.py``): on a drain's 1001,
a dropped socket or a refused connect it reconnects by itself with jittered exponential
backoff and resumes with ``since``. This process only opens its sessions (token hellos, a few
at a time, retried with backoff while the server is not there) and then reports, every
``--every`` seconds, one JSON line on stdout:

``{"t": <monotonic>, "n": sessions opened, "up": sessions with a live socket, "connects":
total welcomes so far, "by_connects": {welcomes: sessions}, "ended": sessions over for good}``

``by_connects`` is how the bench sees who is back after its k-th restart (a session with k+1
welcomes reconnected after it). It exits on SIGTERM or after ``--max-secs``.

At most ``--concurrency`` connects (first ones and reconnects alike) are in flight per process:
each real client is a process of its own, and thousands of sessions packed into one starved
process would otherwise open their TCP connections at once and then take longer than the
server's ``server.header_timeout`` (10 s) to write their upgrade requests, which the server
rightly closes: a livelock of the load generator, not of the server (seen in a 10,000-session
run on a machine at load average 30-45).

Run as ``python -m bench.stormclient --url URL --tokens FILE``; ``FILE`` is a JSON list of
``[user_id, token]``, one per session (tokens are shared by many sessions: argon2 logins
are expensive).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from chatd.client import ChatClient, ChatError, Session

CONNECT_ERRORS = (
    OSError,
    HandshakeError,
    ConnectionClosed,
    trio.BrokenResourceError,
    trio.TooSlowError,
)


class Holder:
    """Open one session, hold it until cancelled; the first connect is retried with backoff."""

    def __init__(self, url: str, user: str, token: str, heartbeat: float) -> None:
        self.client = ChatClient(url, user, token=token)
        self.heartbeat = heartbeat
        self.session: Session | None = None
        self.failed_first = 0

    async def run(self, sem: trio.Semaphore) -> None:
        delay = 0.1
        while True:
            await sem.acquire()
            released = refused = False
            try:
                async with self.client.session(heartbeat=self.heartbeat) as session:
                    sem.release()
                    released = True
                    self.session = session
                    await trio.sleep_forever()
            except* CONNECT_ERRORS:  # the session's nursery wraps what its first connect raised
                self.failed_first += 1
            except* ChatError:
                refused = True  # refused for good
            finally:
                if not released:
                    sem.release()
            if refused:
                return
            self.session = None
            await trio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 10.0)


def report(holders: list[Holder]) -> dict[str, Any]:
    by: Counter[int] = Counter()
    why: Counter[str] = Counter()
    up = ended = connects = 0
    for h in holders:
        s = h.session
        if s is None:
            by[0] += 1
            continue
        by[s.connects] += 1
        connects += s.connects
        if s._ended is not None:  # over for good (the bench counts these as failures)
            ended += 1
            end = s._ended
            if isinstance(end, dict):
                why[f"{end.get('code')}: {end.get('message')}"[:80]] += 1
            else:
                why[f"close {end.reason.code if end.reason else None}"] += 1
        elif s._up.is_set():
            up += 1
    return {
        "t": time.monotonic(),
        "n": len(holders),
        "up": up,
        "connects": connects,
        "by_connects": {str(k): v for k, v in sorted(by.items())},
        "ended": ended,
        "ended_why": dict(why),
        "failed_first": sum(h.failed_first for h in holders),
    }


def limit_connects(sem: trio.Semaphore) -> None:
    """Every session's connect in this process holds ``sem`` (see the module docstring)."""
    connect = Session._connect

    async def limited(self: Session) -> None:
        async with sem:
            await connect(self)

    Session._connect = limited  # type: ignore[method-assign]


async def amain(args: argparse.Namespace, pairs: list[list[str]]) -> None:
    limit_connects(trio.Semaphore(args.concurrency))
    holders = [Holder(args.url, user, token, args.heartbeat) for user, token in pairs]
    sem = trio.Semaphore(args.concurrency * 4)  # sessions being opened (each connect is limited)
    with trio.move_on_after(args.max_secs):
        async with trio.open_nursery() as nursery:
            for h in holders:
                nursery.start_soon(h.run, sem)
            while True:
                sys.stdout.write(json.dumps(report(holders), separators=(",", ":")) + "\n")
                sys.stdout.flush()
                await trio.sleep(args.every)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.stormclient")
    p.add_argument("--url", required=True, help="chatd's base URL")
    p.add_argument("--tokens", required=True, help="JSON file: [[user_id, token], ...]")
    p.add_argument("--concurrency", type=int, default=100, help="connects in flight")
    p.add_argument("--heartbeat", type=float, default=20.0, help="ping frame period, seconds")
    p.add_argument("--every", type=float, default=0.25, help="report period, seconds")
    p.add_argument("--max-secs", type=float, default=600.0, help="hard lifetime")
    args = p.parse_args(argv)
    with open(args.tokens) as f:
        pairs = json.load(f)
    trio.run(amain, args, pairs)


if __name__ == "__main__":
    main()
