"""The scale scenario's load client: ``bench/loadclient.py`` plus reachability probes.

Idle connections are the load client's own (one asyncio ``Protocol`` per connection, raw
framing, heartbeats in time slots): the leanest client the bench has, measured by ``density``.
What this adds is knowing *which* connection a message reached, so the bench can pick random
connections and check that each one got its message:

- ``users``: the user id of every connection, by position (``None`` when it is closed);
- ``probe``: send ``[probe_id, to_user]`` messages from this client's sender connections at a
  fixed rate (body ``P<id>|<monotonic ns>``);
- ``hits``: for every probe received, ``[probe_id, position, latency_us]`` (CLOCK_MONOTONIC is
  machine-wide, so the sender and the receiver may be different processes).

Run as ``python -m bench.scaleclient`` with the load client's arguments.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from bench import loadclient
from bench.loadclient import OPEN, Conn, LoadClient, client_frame, monotonic_ns, packb

PROBE = "P"
#: <linux/in.h>; not exported by Python's socket module.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class ProbeConn(Conn):
    """A load-client connection that tells its client which connection a read came from."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self.client.cur = self  # type: ignore[attr-defined]
        super().data_received(data)


class ScaleClient(LoadClient):
    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.cur: Conn | None = None
        self.hits: list[tuple[int, Conn | None, int]] = []
        self.probe_acked = 0
        self.probe_errors: dict[str, int] = {}

    def on_msg(self, frame: dict[str, Any]) -> None:
        body = frame.get("body", "")
        if isinstance(body, str) and body.startswith(PROBE):
            pid, _, t = body[1:].partition("|")
            self.hits.append((int(pid), self.cur, (monotonic_ns() - int(t)) // 1000))
            return
        super().on_msg(frame)

    def on_ack(self, conn: Conn, frame: dict[str, Any]) -> None:
        ref = frame.get("ref")
        if isinstance(ref, str) and ref.startswith(PROBE):
            self.probe_acked += 1
            return
        super().on_ack(conn, frame)

    def on_error(self, conn: Conn, frame: dict[str, Any]) -> None:
        ref = frame.get("ref")
        if isinstance(ref, str) and ref.startswith(PROBE):
            code = str(frame.get("code"))
            self.probe_errors[code] = self.probe_errors.get(code, 0) + 1
            return
        super().on_error(conn, frame)

    async def _open(self, conn: Conn) -> None:
        """Connect from ``--src`` without choosing the port at bind time.

        ``create_connection(local_addr=(src, 0))`` binds before connecting, and bind(0) must
        find a port no other socket of that address holds: with 10k+ connections per source
        address that search made the load clients spend nearly all their time in the kernel
        (a first 150k run: 14 s system vs 1.7 s user CPU per client by 116k connections, the
        machine 60% in system time). ``IP_BIND_ADDRESS_NO_PORT`` lets connect() pick the
        port by the whole 4-tuple instead (Linux >= 4.2)."""
        args = self.args
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((args.src, 0))
            sock.setblocking(False)
            await self.loop.sock_connect(sock, (args.host, args.port))
            await self.loop.create_connection(lambda: conn, sock=sock)
        except BaseException:
            if conn.transport is None:
                sock.close()
            raise
        await conn.ready

    def users(self) -> dict[str, Any]:
        return {
            "users": [c.token.partition(".")[0] if c.state == OPEN else None for c in self.conns],
        }

    async def probe(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Send each ``[probe_id, to_user]`` at ``rate``/s, round-robin over the senders."""
        sends, rate = cmd["sends"], float(cmd["rate"])
        senders = [c for c in self.senders if c.state == OPEN]
        if sends and not senders:
            return {"sent": 0, "no_sender": len(sends)}
        t0, i = time.monotonic(), 0
        while i < len(sends):
            due = min(len(sends), int((time.monotonic() - t0) * rate) + 1)
            while i < due:
                pid, to = sends[i]
                conn = senders[i % len(senders)]
                body = f"{PROBE}{pid}|{monotonic_ns()}"
                frame = {"type": "send", "ref": f"{PROBE}{pid}", "to": to, "body": body}
                conn.transport.write(client_frame(packb(frame)))
                i += 1
            await asyncio.sleep(0.002)
        return {"sent": i, "secs": time.monotonic() - t0}

    def collect_hits(self) -> dict[str, Any]:
        pos = {id(c): i for i, c in enumerate(self.conns)}
        hits = [[p, pos.get(id(c), -1), us] for p, c, us in self.hits]
        self.hits = []
        out = {"hits": hits, "acked": self.probe_acked, "errors": dict(self.probe_errors)}
        self.probe_acked, self.probe_errors = 0, {}
        return out

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["cmd"]
        if name == "users":
            return self.users()
        if name == "probe":
            return await self.probe(cmd)
        if name == "hits":
            return self.collect_hits()
        return await super().handle(cmd)


def main(argv: list[str] | None = None) -> None:
    # The load client builds its connections and client by these module names.
    loadclient.Conn = ProbeConn  # type: ignore[misc]
    loadclient.LoadClient = ScaleClient  # type: ignore[misc]
    loadclient.main(argv)


if __name__ == "__main__":
    main()
