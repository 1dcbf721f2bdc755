"""Kill -9 torture: acknowledged messages are never lost and never duplicated (issue 16).

``python -m bench torture --cycles N --clients K``: K users (a 1:1 channel with the next user
and one group of all of them) send with unique refs and record every ack, over raw WebSockets
that track their own cursor. The server (``python -m chatd serve`` in a subprocess, its own
data directory, high rate limits) is killed with SIGKILL at a random moment 50-300 ms after it
answers ``/healthz`` in each cycle, then restarted on the same port and data. Clients reconnect
with ``hello since=<cursor>``, resend every un-acked ref and carry on. After the last cycle the
server runs until every ref is acked, then the checks use only the public interfaces:

- every acked message is in its channel's history (``GET /v1/channels/{id}/messages``)
  exactly once (bodies are the refs) with its acked msg_id, and in every member's inbox (a
  fresh ``hello since=0`` replay) exactly once;
- each channel's msg_ids and each inbox's seqs are 1..last with no gap;
- no connection saw the same (channel, msg_id) twice, or an inbox seq at or below one it had;
- a ref acked twice (a resend) was acked with the same msg_id.

It prints ``sent acked kills lost duplicated`` and writes the whole result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from chatd.client import ChatClient, HttpClient

CONFIG = """\
# chatd config of the torture run: limits out of the way, durable commits (the default).
[limits]
send_rate = 1000000.0
send_burst = 1000000
login_rate = 1000000.0
login_burst = 1000000
signup_rate = 1000000.0
signup_burst = 1000000
history_rate = 1000000.0
history_burst = 1000000
api_rate = 1000000.0
api_burst = 1000000
max_sessions_per_user = 1000

[security]
argon2_memory_kib = 7168
argon2_time_cost = 5
"""
#: Errors a connection may end with while the server dies or restarts.
DROPPED = (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError, trio.TooSlowError)
#: Send errors that mean "try again later" (the ref stays pending).
RETRYABLE = {"unavailable", "rate_limited"}
#: Seconds a (re)started server may take to answer /healthz.
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m chatd serve`` in a subprocess, started and SIGKILLed at will."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.data = workdir / "data"
        self.config = workdir / "chatd.toml"
        self.config.write_text(CONFIG)
        self.log = open(workdir / "server.log", "ab")  # noqa: SIM115 (closed in close())
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    async def start(self) -> float:
        """Start the server and wait until ``/healthz`` answers; the seconds that took."""
        argv = [sys.executable, "-m", "chatd", "serve", "--listen", f"127.0.0.1:{self.port}"]
        argv += ["--data", str(self.data), "--config", str(self.config), "--log-level", "WARNING"]
        began = time.monotonic()
        # Popen, not trio.run_process: kill() must SIGKILL and reap it synchronously.
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log)  # noqa: ASYNC220
        self.starts += 1
        with trio.fail_after(START_TIMEOUT):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"chatd exited {self.proc.returncode}; see {self.log.name}")
                try:
                    async with HttpClient(self.url, timeout=1.0) as http:
                        if (await http.request("GET", "/healthz")).status == 200:
                            return time.monotonic() - began
                except (OSError, ConnectionError, trio.TooSlowError):
                    pass
                await trio.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL, and reap it: no shutdown code runs, like a power cut of the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def close(self) -> None:
        self.kill()
        self.log.close()


@dataclass
class Device:
    """One user's device: its unacked sends, acks and what its connections saw."""

    user: str
    token: str
    ws_url: str
    targets: list[dict[str, str]]  # send targets, e.g. {"to": "u1"} and {"channel": "g:..."}
    window: int
    cursor: int = 0  # the highest inbox seq received; the next hello's since
    next_ref: int = 0
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # ref -> send frame
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)  # ref -> first ack
    ack_mismatches: list[dict[str, Any]] = field(default_factory=list)
    device_duplicates: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    connects: int = 0
    sending: bool = True
    room: trio.Event = field(default_factory=trio.Event)
    retry: list[str] = field(default_factory=list)  # refs refused "try later", to resend

    def new_send(self) -> dict[str, Any]:
        ref = f"{self.user}.{self.next_ref}"
        self.next_ref += 1
        frame = {"type": "send", "ref": ref, "body": ref, **random.choice(self.targets)}
        self.pending[ref] = frame
        return frame

    def on_frame(self, frame: dict[str, Any], seen: set[tuple[str, int]], last: list[int]) -> None:
        kind = frame.get("type")
        if kind == "msg":
            key = (frame["channel"], frame["msg_id"])
            if key in seen or frame["inbox"] <= last[0]:
                self.device_duplicates.append({"connect": self.connects, **frame})
            seen.add(key)
            last[0] = max(last[0], frame["inbox"])
            self.cursor = max(self.cursor, frame["inbox"])
        elif kind == "ack":
            ref = frame["ref"]
            first = self.acks.get(ref)
            if first is None:
                self.acks[ref] = frame
            elif (first["channel"], first["msg_id"]) != (frame["channel"], frame["msg_id"]):
                self.ack_mismatches.append({"first": first, "again": frame})
            self.pending.pop(ref, None)
            self.room.set()
        elif kind == "error":
            if frame.get("code") in RETRYABLE and frame.get("ref") in self.pending:
                self.retry.append(frame["ref"])
            else:
                self.errors.append(frame)
                self.pending.pop(frame.get("ref", ""), None)
            self.room.set()

    async def run(self, stop: trio.Event) -> None:
        """Connect, resync from the cursor, resend, send; on a drop, again. Until ``stop``."""
        while not stop.is_set():
            try:
                await self._connection(stop)
            except* DROPPED:
                pass
            await trio.sleep(random.uniform(0.005, 0.03))

    async def _connection(self, stop: trio.Event) -> None:
        async with open_websocket_url(
            self.ws_url, subprotocols=["chatd.v1.json"], connect_timeout=10, disconnect_timeout=1
        ) as ws:
            hello = {"type": "hello", "token": self.token, "since": self.cursor}
            await ws.send_message(json.dumps(hello))
            with trio.fail_after(10):
                welcome = json.loads(await ws.get_message())
            if welcome.get("type") != "welcome":
                self.errors.append(welcome)
                return
            self.connects += 1
            seen: set[tuple[str, int]] = set()
            last = [self.cursor]
            for frame in list(self.pending.values()):  # un-acked: resend, same ref
                await ws.send_message(json.dumps(frame))
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    while True:
                        self.on_frame(json.loads(await ws.get_message()), seen, last)

                async def stopper() -> None:
                    await stop.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(reader)
                nursery.start_soon(stopper)
                await self._sender(ws)

    async def _sender(self, ws: Any) -> None:
        while True:
            while not self.retry and (not self.sending or len(self.pending) >= self.window):
                self.room = trio.Event()
                await self.room.wait()
            if self.retry:
                frame = self.pending.get(self.retry.pop(0))
                if frame is not None:
                    await trio.sleep(0.05)
                    await ws.send_message(json.dumps(frame))
                continue
            await ws.send_message(json.dumps(self.new_send()))


async def _setup(url: str, clients: int, window: int) -> list[Device]:
    """Sign up and log in ``clients`` users, make the group of all of them."""
    names = [f"torture{i}" for i in range(clients)]
    accounts = [ChatClient(url, name, "torture-password") for name in names]
    for account in accounts:
        await account.signup()
        await account.login()
    async with HttpClient(url, token=accounts[0].token) as http:
        group = await http.call("POST", "/v1/groups", {"name": "torture", "members": names})
    devices = []
    for i, account in enumerate(accounts):
        peer = names[(i + 1) % clients]
        targets = [{"channel": group["channel_id"]}]
        if peer != account.user_id:
            targets.append({"to": peer})
        assert account.token is not None
        ws_url = account.ws_url or url.replace("http", "ws", 1) + "/v1/ws"
        devices.append(Device(account.user_id, account.token, ws_url, targets, window))
    return devices


async def _history(url: str, token: str, channel: str) -> list[dict[str, Any]]:
    """Every message of ``channel``, ascending, paging back with ``before``."""
    pages: list[list[dict[str, Any]]] = []
    before: int | None = None
    async with HttpClient(url, token=token) as http:
        while True:
            query = "?limit=100" + (f"&before={before}" if before is not None else "")
            page = await http.call("GET", f"/v1/channels/{channel}/messages{query}")
            if page["messages"]:
                pages.append(page["messages"])
                before = page["messages"][0]["msg_id"]
            if not page["more"] or not page["messages"]:
                break
    return [m for page in reversed(pages) for m in page]


async def _inbox(device: Device) -> list[dict[str, Any]]:
    """The user's whole inbox: a fresh connection's ``hello since=0`` replay."""
    async with open_websocket_url(device.ws_url, subprotocols=["chatd.v1.json"]) as ws:
        await ws.send_message(json.dumps({"type": "hello", "token": device.token, "since": 0}))
        frames: list[dict[str, Any]] = []
        with trio.fail_after(60):
            while True:
                frame = json.loads(await ws.get_message())
                if frame["type"] == "msg":
                    frames.append(frame)
                elif frame["type"] == "synced":
                    return frames
                elif frame["type"] == "error":
                    raise RuntimeError(f"replay refused: {frame}")


async def _check(url: str, devices: list[Device]) -> dict[str, Any]:
    acked: dict[str, dict[str, Any]] = {}  # ref -> ack (refs are unique across users)
    for device in devices:
        acked.update(device.acks)
    channels = sorted({ack["channel"] for ack in acked.values()})
    problems: dict[str, list[Any]] = {"lost": [], "duplicated": [], "gaps": [], "other": []}
    lost: set[str] = set()
    duplicated: set[str] = set()
    members: dict[str, set[str]] = {}
    token = devices[0].token
    by_user = {d.user: d for d in devices}
    for channel in channels:
        if channel.startswith("dm:"):
            members[channel] = set(channel.split(":")[1:])
            reader = by_user[channel.split(":")[1]].token
        else:
            members[channel] = set(by_user)
            reader = token
        messages = await _history(url, reader, channel)
        ids = [m["msg_id"] for m in messages]
        if ids != list(range(1, len(ids) + 1)):
            problems["gaps"].append({"channel": channel, "msg_ids": ids[:50]})
        count: dict[str, list[int]] = {}
        for m in messages:
            count.setdefault(m["body"], []).append(m["msg_id"])
        for ref, ack in acked.items():
            if ack["channel"] != channel:
                continue
            found = count.get(ref, [])
            if not found:
                lost.add(ref)
                problems["lost"].append({"ref": ref, "where": "history", **ack})
            elif len(found) > 1:
                duplicated.add(ref)
                problems["duplicated"].append({"ref": ref, "where": "history", "ids": found})
            elif found[0] != ack["msg_id"]:
                problems["other"].append({"ref": ref, "acked": ack["msg_id"], "stored": found})
    for device in devices:
        inbox = await _inbox(device)
        seqs = [f["inbox"] for f in inbox]
        if seqs != list(range(1, len(seqs) + 1)):
            problems["gaps"].append({"inbox": device.user, "seqs": seqs[:50]})
        held: dict[tuple[str, int], int] = {}
        for f in inbox:
            key = (f["channel"], f["msg_id"])
            held[key] = held.get(key, 0) + 1
        for ref, ack in acked.items():
            if device.user not in members[ack["channel"]]:
                continue
            n = held.get((ack["channel"], ack["msg_id"]), 0)
            if n == 0:
                lost.add(ref)
                problems["lost"].append({"ref": ref, "where": f"inbox {device.user}", **ack})
            elif n > 1:
                duplicated.add(ref)
                problems["duplicated"].append({"ref": ref, "where": f"inbox {device.user}"})
    for device in devices:
        for dup in device.device_duplicates:
            problems["duplicated"].append({"where": f"device {device.user}", **dup})
        for mismatch in device.ack_mismatches:
            duplicated.add(mismatch["first"]["ref"])
            problems["duplicated"].append({"where": "ack", **mismatch})
        problems["other"].extend(device.errors)
    device_dups = sum(len(d.device_duplicates) for d in devices)
    return {
        "lost": len(lost),
        "duplicated": len(duplicated) + device_dups,
        "device_duplicates": device_dups,
        "gaps": len(problems["gaps"]),
        "problems": {k: v[:20] for k, v in problems.items()},
        "channels": len(channels),
    }


def log_problems(path: Path) -> list[str]:
    """Lines of the server's log (every run of it) at ERROR or CRITICAL, or tracebacks."""
    marks = ("ERROR", "CRITICAL", "Traceback")
    return [
        line
        for line in path.read_text(errors="replace").splitlines()
        if any(m in line for m in marks)
    ]


async def torture(
    cycles: int,
    clients: int,
    *,
    window: int = 4,
    min_kill: float = 0.05,
    max_kill: float = 0.3,
    seed: int | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """The whole run (see the module docstring); the result as a dict."""
    seed = random.randrange(1 << 30) if seed is None else seed
    random.seed(seed)
    with tempfile.TemporaryDirectory(prefix="chatd-torture-") as tmp:
        server = Server(workdir or Path(tmp), free_port())
        began = time.monotonic()
        starts: list[float] = []
        kills = 0
        try:
            starts.append(await server.start())
            devices = await _setup(server.url, clients, window)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for device in devices:
                    nursery.start_soon(device.run, stop)
                for _ in range(cycles):
                    await trio.sleep(random.uniform(min_kill, max_kill))
                    server.kill()
                    kills += 1
                    starts.append(await server.start())
                # Let everything un-acked be acked by a server that stays up.
                for device in devices:
                    device.sending = False
                    device.room.set()
                with trio.fail_after(60):
                    while any(d.pending for d in devices):  # noqa: ASYNC110 (many devices)
                        await trio.sleep(0.05)
                stop.set()
            checked = await _check(server.url, devices)
            code = server.stop()
            server.log.flush()
            log_errors = log_problems(Path(server.log.name))
        finally:
            server.close()
    sent = sum(d.next_ref for d in devices)
    acked = sum(len(d.acks) for d in devices)
    return {
        "scenario": "torture",
        "seed": seed,
        "cycles": cycles,
        "clients": clients,
        "window": window,
        "kill_window_ms": [min_kill * 1000, max_kill * 1000],
        "sent": sent,
        "acked": acked,
        "kills": kills,
        **checked,
        "connects": sum(d.connects for d in devices),
        "restart_s": {
            "median": sorted(starts)[len(starts) // 2],
            "max": max(starts),
        },
        "seconds": round(time.monotonic() - began, 2),
        "server_exit": code,
        "server_log_errors": len(log_errors),
        "server_log_sample": log_errors[:10],
    }


def add_parser(sub: Any) -> None:
    """``torture`` in ``python -m bench``'s sub-commands."""
    p = sub.add_parser("torture", help="SIGKILL the server N times under senders; lost/duplicated")
    p.add_argument("--cycles", type=int, default=20, help="kill/restart cycles (20)")
    p.add_argument("--clients", type=int, default=4, help="users sending, one device each (4)")
    p.add_argument("--window", type=int, default=4, help="un-acked sends per client (4)")
    p.add_argument("--seed", type=int, default=None, help="random seed (a random one)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="JSON directory")
    p.set_defaults(scenario="torture")


def main(args: argparse.Namespace) -> int:
    """Run, print ``sent acked kills lost duplicated`` and write the JSON; 1 if any was lost
    or duplicated."""
    result = trio.run(
        lambda: torture(args.cycles, args.clients, window=args.window, seed=args.seed)
    )
    print("sent acked kills lost duplicated")
    print(result["sent"], result["acked"], result["kills"], result["lost"], result["duplicated"])
    os.makedirs(args.out, exist_ok=True)
    path = Path(args.out) / f"torture-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    if result["server_log_errors"]:
        first = result["server_log_sample"][0]
        print(f"server log: {result['server_log_errors']} error line(s), e.g. {first}")
    return 1 if result["lost"] or result["duplicated"] or result["gaps"] else 0
