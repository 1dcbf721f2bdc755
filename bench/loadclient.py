"""The load-client process: thousands of lean WebSocket connections on asyncio + uvloop.

The bench (``bench/fleet.py``) starts several of these, each bound to its own source address,
and drives them with one JSON command per line on stdin; every command gets one JSON reply line
on stdout. A client exits on ``exit``, when stdin closes (the bench is gone), or after
``--max-secs`` whatever happens.

Each connection is an asyncio ``Protocol`` (no stream objects, no task per connection) speaking
just enough WebSocket (``bench/wire.py``) with the ``chatd.v1.msgpack`` subprotocol. A sender
connection knows its peer (a user id, or a group channel id ``g:...``); ``relay`` keeps
``window`` un-acked sends per sender (closed loop), ``rate`` sends at a fixed total rate (open
loop). A send's body starts with its monotonic send
time in nanoseconds, so whoever receives it can compute send->deliver latency; the sender keeps
``ref -> send time`` for send->ack latency. Latencies are kept only for sends made inside the
measuring window, and reported raw (microseconds) so the bench can merge exact percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import struct
import sys
import time
from collections import Counter
from typing import Any

import msgpack

from bench import wire

HANDSHAKE, OPEN, CLOSED = 0, 1, 2
LINGER_RST = struct.pack("ii", 1, 0)
HB_TICK = 0.1  # heartbeat ticker period, seconds
monotonic_ns = time.monotonic_ns
packb = msgpack.packb
unpackb = msgpack.unpackb
client_frame = wire.client_frame


class ConnectError(Exception):
    """The connection did not reach ``welcome`` (HTTP refusal, error frame, early close)."""


class Conn(asyncio.Protocol):
    """One WebSocket connection; ``peer`` is the user it sends to (None: receive only)."""

    __slots__ = (
        "client",
        "token",
        "peer",
        "key",
        "transport",
        "buf",
        "state",
        "ready",
        "out",
        "code",
        "leaving",
    )

    def __init__(self, client: LoadClient, token: str, peer: str | None) -> None:
        self.client = client
        self.token = token
        self.peer = peer
        # A peer that is a group channel id ("g:...") is sent to with ``channel``.
        self.key = "channel" if peer and peer.startswith("g:") else "to"
        self.transport: Any = None
        self.buf = b""
        self.state = HANDSHAKE
        self.ready: asyncio.Future[None] = client.loop.create_future()
        self.out: list[bytes] | None = None  # set while a read is being handled (corked)
        self.code = 0
        self.leaving = False  # closed on purpose by ``churn``: not counted as lost

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(self.client.upgrade)

    def write(self, data: bytes) -> None:
        if self.out is not None:
            self.out.append(data)
        elif self.state == OPEN:
            self.transport.write(data)

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectError(why))
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
        if self.state == HANDSHAKE:
            try:
                parsed = wire.split_response(data)
            except ValueError as exc:
                self._fail(str(exc))
                return
            if parsed is None:
                self.buf = data
                return
            status, data = parsed
            if status != 101:
                self._fail(f"http {status}")
                return
            self.state = OPEN
            self.transport.write(client_frame(packb({"type": "hello", "token": self.token})))
        frames, self.buf = wire.server_frames(data)
        client = self.client
        self.out = []
        try:
            for opcode, payload in frames:
                if opcode == wire.OP_BINARY:
                    frame = unpackb(payload)
                elif opcode == wire.OP_TEXT:
                    frame = json.loads(payload)
                elif opcode == wire.OP_PING:
                    self.out.append(client_frame(payload, wire.OP_PONG))
                    continue
                elif opcode == wire.OP_PONG:
                    client.pongs += 1
                    continue
                elif opcode == wire.OP_CLOSE:
                    self.code = wire.close_code(payload)
                    client.close_reasons[f"{self.code} {payload[2:].decode(errors='replace')}"] += 1
                    self.out.append(wire.close_frame(self.code))
                    break
                else:
                    continue
                kind = frame.get("type")
                if kind == "ack":
                    client.on_ack(self, frame)
                elif kind == "msg":
                    client.on_msg(frame)
                elif kind == "welcome":
                    if not self.ready.done():
                        self.ready.set_result(None)
                elif kind == "error":
                    client.on_error(self, frame)
                elif kind == "pong":
                    client.pongs += 1
        finally:
            out, self.out = self.out, None
            if out:
                self.transport.write(b"".join(out))
            if self.code:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        if not self.ready.done():
            self.ready.set_exception(ConnectError(f"closed before welcome ({self.code})"))
        if self.leaving:
            self.client.churned += 1
        else:
            self.client.lost[str(self.code or "no close frame")] += 1


class LoadClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.loop = asyncio.get_running_loop()
        self.args = args
        self.upgrade = wire.upgrade_request(args.host, args.port, args.path, args.subprotocol)
        self.conns: list[Conn] = []
        self.senders: list[Conn] = []
        self.pending: dict[str, int] = {}
        self.prefix = f"{os.getpid():x}."
        self.seq = 0
        self.pad = ""
        self.running = False  # closed loop: each ack (or refusal) triggers the next send
        self.m_start = self.m_end = 0  # measuring window, monotonic ns of the send
        self.ack_lat: list[int] = []
        self.del_lat: list[int] = []
        self.sent = self.acked = self.delivered = self.errors = 0
        self.pings = self.pongs = 0
        self.error_codes: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.close_reasons: Counter[str] = Counter()  # close frames from the server
        self.hb_slots: list[list[Conn]] | None = None
        self._hb_added = 0
        self.hb_late_max = 0.0  # how late the heartbeat ticker ran at worst, seconds
        self._heartbeat: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None  # set when the last pending send is answered
        self.churnable: list[Conn] = []  # idle connections ``churn`` may close and reopen
        self.churned = 0  # connections closed by ``churn``
        self._soak: asyncio.Task[None] | None = None
        self.soak_skipped = 0
        self._churning: asyncio.Task[None] | None = None
        self.reopened = 0  # churned connections open again (welcome received)
        self.reopen_failed: Counter[str] = Counter()
        self.reopen_secs = 0.0  # the slowest churn's reconnects, start to last welcome

    # -- the send path
    def send(self, conn: Conn) -> None:
        self.seq += 1
        ref = self.prefix + str(self.seq)
        t = monotonic_ns()
        body = f"{t}|{self.pad}"
        frame = {"type": "send", "ref": ref, conn.key: conn.peer, "body": body}
        conn.write(client_frame(packb(frame)))
        self.pending[ref] = t
        self.sent += 1

    def on_ack(self, conn: Conn, frame: dict[str, Any]) -> None:
        t = self.pending.pop(frame.get("ref"), None)  # type: ignore[arg-type]
        if t is None:
            return
        self.acked += 1
        if self._idle is not None and not self.pending:
            self._idle.set()
        if self.m_start <= t < self.m_end:
            self.ack_lat.append(monotonic_ns() - t)
        if self.running:
            self.send(conn)

    def on_msg(self, frame: dict[str, Any]) -> None:
        self.delivered += 1
        body = frame.get("body", "")
        try:
            t = int(body[: body.index("|")])
        except ValueError:
            return
        if self.m_start <= t < self.m_end:
            self.del_lat.append(monotonic_ns() - t)

    def on_error(self, conn: Conn, frame: dict[str, Any]) -> None:
        if not conn.ready.done():
            conn.ready.set_exception(ConnectError(str(frame.get("code"))))
            return
        self.errors += 1
        self.error_codes[str(frame.get("code"))] += 1
        ref = frame.get("ref")
        if ref is None or self.pending.pop(ref, None) is None:
            return
        if self._idle is not None and not self.pending:
            self._idle.set()
        if self.running:
            delay = max(float(frame.get("retry_after") or 10) / 1000.0, 0.001)
            self.loop.call_later(delay, self._resend, conn)

    def _resend(self, conn: Conn) -> None:
        if self.running and conn.state == OPEN:
            self.send(conn)

    # -- commands
    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        sem = asyncio.Semaphore(int(cmd.get("concurrency", 256)))
        timeout = float(cmd.get("timeout", 30))
        errors: Counter[str] = Counter()
        args = self.args
        churnable = bool(cmd.get("churnable"))

        async def one(token: str, peer: str | None) -> None:
            async with sem:
                conn = Conn(self, token, peer)
                try:
                    await asyncio.wait_for(self._open(conn), timeout)
                except (TimeoutError, OSError, ConnectError) as exc:
                    errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                    if conn.transport is not None:
                        conn.transport.abort()
                    return
                self.conns.append(conn)
                self._hb_add(conn)
                if peer:
                    self.senders.append(conn)
                elif churnable:
                    self.churnable.append(conn)

        t0 = time.monotonic()
        await asyncio.gather(*(one(token, peer) for token, peer in cmd["sessions"]))
        secs = time.monotonic() - t0
        ok = len(cmd["sessions"]) - sum(errors.values())
        return {
            "ok": ok,
            "failed": dict(errors),
            "secs": secs,
            "open": self.open(),
            "src": args.src,
        }

    async def _open(self, conn: Conn) -> None:
        args = self.args
        await self.loop.create_connection(
            lambda: conn, args.host, args.port, local_addr=(args.src, 0)
        )
        await conn.ready

    def open(self) -> int:
        return sum(1 for c in self.conns if c.state == OPEN)

    def _reset(self, body_size: int) -> None:
        self.pad = "x" * max(0, body_size - 20)
        self.sent = self.acked = self.delivered = self.errors = 0
        self.error_codes.clear()
        self.ack_lat, self.del_lat = [], []
        self.m_start = self.m_end = 0

    def _counts(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "acked": self.acked,
            "delivered": self.delivered,
            "errors": self.errors,
        }

    async def _measure(self, warmup: float, duration: float) -> dict[str, Any]:
        await asyncio.sleep(warmup)
        before = self._counts()
        self.m_start = monotonic_ns()
        self.m_end = self.m_start + int(duration * 1e9)
        await asyncio.sleep(duration)
        after = self._counts()
        return {k: after[k] - before[k] for k in after}

    async def _drain(self, secs: float) -> None:
        if not self.pending:
            return
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), secs)
        except TimeoutError:
            pass
        finally:
            self._idle = None

    def _result(self, window: dict[str, int], duration: float) -> dict[str, Any]:
        return {
            "window": window,
            "duration": duration,
            "senders": len(self.senders),
            "unfinished": len(self.pending),
            "error_codes": dict(self.error_codes),
            "ack_us": [t // 1000 for t in self.ack_lat],
            "deliver_us": [t // 1000 for t in self.del_lat],
            "open": self.open(),
        }

    async def relay(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Closed loop: ``window`` un-acked sends per sender for warmup + duration seconds."""
        self._reset(int(cmd.get("body", 32)))
        self.pending.clear()
        self.running = True
        for conn in self.senders:
            for _ in range(int(cmd["window"])):
                self.send(conn)
        try:
            window = await self._measure(float(cmd["warmup"]), float(cmd["duration"]))
        finally:
            self.running = False
        await self._drain(float(cmd.get("drain", 5)))
        return self._result(window, float(cmd["duration"]))

    async def rate(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Open loop: ``rate`` sends/s spread round-robin over the senders."""
        self._reset(int(cmd.get("body", 32)))
        self.pending.clear()
        rate, max_pending = float(cmd["rate"]), int(cmd.get("max_pending", 100_000))
        total = float(cmd["warmup"]) + float(cmd["duration"])
        senders, skipped = self.senders, 0

        async def pace() -> None:
            nonlocal skipped
            t0, issued, i = time.monotonic(), 0, 0
            while (now := time.monotonic()) < t0 + total:
                due = int((now - t0) * rate) - issued
                for _ in range(due):
                    conn = senders[i % len(senders)]
                    i += 1
                    if len(self.pending) >= max_pending or conn.state != OPEN:
                        skipped += 1
                    else:
                        self.send(conn)
                issued += max(due, 0)
                await asyncio.sleep(0.001)

        pacer = asyncio.ensure_future(pace()) if senders else None
        window = await self._measure(float(cmd["warmup"]), float(cmd["duration"]))
        if pacer is not None:
            await pacer
        await self._drain(float(cmd.get("drain", 5)))
        result = self._result(window, float(cmd["duration"]))
        result["skipped"] = skipped
        return result

    # -- soak: open-loop traffic in the background, sampled now and then; churn
    def soak_start(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Start sending ``rate`` msgs/s round-robin over the senders in the background, until
        ``total`` sends are made or ``secs`` pass (both bounded). Every send is timed; the
        latencies are handed over (and forgotten) by each :meth:`soak_sample`."""
        self._reset(int(cmd.get("body", 32)))
        self.pending.clear()
        self.m_start, self.m_end = 0, 1 << 62
        self.soak_skipped = 0
        rate, total = float(cmd["rate"]), int(cmd["total"])
        secs, max_pending = float(cmd["secs"]), int(cmd.get("max_pending", 20_000))
        senders = self.senders

        async def pace() -> None:
            t0, issued, i = time.monotonic(), 0, 0
            while issued < total and (now := time.monotonic()) < t0 + secs:
                due = min(int((now - t0) * rate), total) - issued
                late = due - max(1, int(rate / 10))  # a starved client does not burst:
                if late > 0:  # more than 0.1 s behind, the excess is skipped
                    self.soak_skipped += late
                    issued, due = issued + late, due - late
                for _ in range(due):
                    conn = senders[i % len(senders)]
                    i += 1
                    if len(self.pending) >= max_pending or conn.state != OPEN:
                        self.soak_skipped += 1
                    else:
                        self.send(conn)
                issued += max(due, 0)
                await asyncio.sleep(0.002)

        if self._soak is not None:
            self._soak.cancel()
        self._soak = asyncio.ensure_future(pace()) if senders and rate > 0 else None
        return {"senders": len(senders)}

    def soak_sample(self) -> dict[str, Any]:
        """Counts so far, and the latencies (us) of what was acked/delivered since the last
        sample."""
        ack, deliver = self.ack_lat, self.del_lat
        self.ack_lat, self.del_lat = [], []
        return {
            **self._counts(),
            "skipped": self.soak_skipped,
            "pending": len(self.pending),
            "error_codes": dict(self.error_codes),
            "ack_us": [t // 1000 for t in ack],
            "deliver_us": [t // 1000 for t in deliver],
            "open": self.open(),
            "churned": self.churned,
            "reopened": self.reopened,
            "reopen_failed": dict(self.reopen_failed),
            "reopen_secs_max": self.reopen_secs,
            "lost": dict(self.lost),
            "sending": self._soak is not None and not self._soak.done(),
        }

    async def soak_stop(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if self._soak is not None:
            self._soak.cancel()
            self._soak = None
        drain = float(cmd.get("drain", 10))
        if self._churning is not None and not self._churning.done():
            # The final sample counts connections: let a churn still reconnecting finish.
            await asyncio.wait([self._churning], timeout=drain)
        await self._drain(drain)
        return self.soak_sample()

    def churn(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Close ``count`` random idle connections (a WebSocket close, then FIN) and open
        each again with its token in the background: a device reconnecting (``hello`` with a
        token). Returns at once (so sampling goes on however slow the reconnects are); the
        reconnects are counted in :meth:`soak_sample`. Skipped while the last one runs."""
        if self._churning is not None and not self._churning.done():
            return {"closed": 0, "busy": True}
        live = [c for c in self.churnable if c.state == OPEN]
        leaving = random.sample(live, min(int(cmd["count"]), len(live)))
        for conn in leaving:
            conn.leaving = True
            conn.transport.write(wire.close_frame(1000))
            conn.transport.close()
        gone = set(map(id, leaving))
        self.churnable = [c for c in self.churnable if id(c) not in gone]
        self.conns = [c for c in self.conns if id(c) not in gone and c.state != CLOSED]
        if self.hb_slots is not None:  # drop the dead from their slots; survivors keep theirs
            for slot in self.hb_slots:
                slot[:] = [c for c in slot if id(c) not in gone and c.state != CLOSED]
        sessions = [[c.token, None] for c in leaving]
        concurrency = cmd.get("concurrency", 64)

        async def reopen() -> None:
            t0 = time.monotonic()
            reply = await self.connect(
                {"sessions": sessions, "concurrency": concurrency, "churnable": True}
            )
            self.reopened += reply["ok"]
            self.reopen_failed.update(reply["failed"])
            self.reopen_secs = max(self.reopen_secs, time.monotonic() - t0)

        self._churning = asyncio.ensure_future(reopen())
        return {"closed": len(leaving), "busy": False}

    def heartbeat(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Every connection sends a ping once per ``interval`` s, phases spread evenly.

        Connections sit in ``interval / HB_TICK`` time slots (round-robin, also for ones that
        connect later); each tick pings one slot, so every connection is pinged exactly once
        per interval however the set grows.
        """
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        self.hb_slots = None
        interval = float(cmd.get("interval", 0))
        if interval > 0:
            app = cmd.get("kind") == "app"
            frame = client_frame(packb({"type": "ping"})) if app else wire.PING
            self.hb_slots = [[] for _ in range(max(1, round(interval / HB_TICK)))]
            for conn in self.conns:
                self._hb_add(conn)
            self._heartbeat = asyncio.ensure_future(self._beat(frame))
        return {"pings": self.pings, "pongs": self.pongs}

    def _hb_add(self, conn: Conn) -> None:
        if self.hb_slots is not None:
            self.hb_slots[self._hb_added % len(self.hb_slots)].append(conn)
            self._hb_added += 1

    async def _beat(self, frame: bytes) -> None:
        start, done = time.monotonic(), 0
        while self.hb_slots is not None:
            await asyncio.sleep(HB_TICK)
            due = int((time.monotonic() - start) / HB_TICK)
            self.hb_late_max = max(self.hb_late_max, (due - done - 1) * HB_TICK)
            while done < due:  # a late tick catches up: no slot is skipped
                for conn in self.hb_slots[done % len(self.hb_slots)]:
                    if conn.state == OPEN:
                        conn.write(frame)
                        self.pings += 1
                done += 1

    def status(self) -> dict[str, Any]:
        return {
            "open": self.open(),
            "conns": len(self.conns),
            "lost": dict(self.lost),
            "close_reasons": dict(self.close_reasons),
            "hb_late_max": self.hb_late_max,
            "pings": self.pings,
            "pongs": self.pongs,
        }

    async def close_all(self) -> dict[str, Any]:
        """Reset every connection (SO_LINGER 0: no TIME_WAIT left on the source ports)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for task in (self._soak, self._churning):
            if task is not None:
                task.cancel()
        self.hb_slots = None
        self.running = False
        for conn in self.conns:
            if conn.transport is not None and not conn.transport.is_closing():
                sock = conn.transport.get_extra_info("socket")
                try:
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
                except OSError:
                    pass
                conn.transport.abort()
        await asyncio.sleep(0.1)
        closed = len(self.conns)
        self.conns, self.senders = [], []
        return {"closed": closed}

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["cmd"]
        if name == "connect":
            return await self.connect(cmd)
        if name == "relay":
            return await self.relay(cmd)
        if name == "rate":
            return await self.rate(cmd)
        if name == "heartbeat":
            return self.heartbeat(cmd)
        if name == "status":
            return self.status()
        if name == "soak_start":
            return self.soak_start(cmd)
        if name == "soak_sample":
            return self.soak_sample()
        if name == "soak_stop":
            return await self.soak_stop(cmd)
        if name == "churn":
            return self.churn(cmd)
        if name == "close":
            return await self.close_all()
        raise ValueError(f"unknown command {name!r}")


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def amain(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    client = LoadClient(args)
    reader = asyncio.StreamReader(limit=1 << 28)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands() -> None:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "exit":
                return
            try:
                reply = await client.handle(cmd)
            except (ValueError, KeyError, OSError) as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            emit({"cmd": cmd["cmd"], **reply})

    try:
        await asyncio.wait_for(commands(), args.max_secs)
    except TimeoutError:
        print("loadclient: --max-secs reached, exiting", file=sys.stderr)
    finally:
        await client.close_all()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadclient")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/v1/ws")
    p.add_argument("--src", default="127.0.0.1", help="source address to bind")
    p.add_argument("--subprotocol", default="chatd.v1.msgpack")
    p.add_argument("--max-secs", type=float, default=3600.0, help="hard lifetime cap")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # plain asyncio works too, only slower
        asyncio.run(amain(args))
    else:
        uvloop.run(amain(args))


if __name__ == "__main__":
    main()
