"""Bare relay servers to hold chatd against: same wire frames, no auth, no storage.

    python -m bench.baselines {trio,websockets} --listen 127.0.0.1:0

Both speak the subset of the chatd contract the load clients use: ``hello`` (the token is taken
as the user id, unchecked) -> ``welcome``; ``send`` ``{ref, to, body}`` -> an ``ack`` to the
sender and a ``msg`` to every connection of ``to`` (per-pair msg ids and per-user inbox seqs
counted in memory); ``ping`` -> ``pong``. Frames are msgpack (binary) under
``chatd.v1.msgpack``, JSON otherwise.

- ``trio``: trio + wsproto, one task per connection on a plain non-blocking socket (the same IO
  shell as chatd: wait for readability, ``recv``, write straight to the peer's socket, a flusher
  task only when a kernel buffer is full). No gc tuning.
- ``websockets``: asyncio + uvloop + ``websockets`` (its asyncio server), one handler per
  connection, keepalive pings and compression off.

Each prints ``baseline listening on ws://HOST:PORT`` to stderr once it accepts connections.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import sys
import time
from typing import Any

import msgpack

SUBPROTOCOLS = ["chatd.v1.msgpack", "chatd.v1.json"]


def decode(data: bytes | str) -> dict[str, Any]:
    obj = json.loads(data) if isinstance(data, str) else msgpack.unpackb(data)
    if not isinstance(obj, dict):
        raise ValueError("frame must be a map")
    return obj


def encode(frame: dict[str, Any], binary: bool) -> bytes | str:
    if binary:
        return msgpack.packb(frame)  # type: ignore[no-any-return]
    return json.dumps(frame, separators=(",", ":"))


class Hub:
    """Who is online, and the counters a relay needs: the logic both baselines share."""

    def __init__(self) -> None:
        self.online: dict[str, list[Any]] = {}
        self.msg_ids: dict[str, int] = {}
        self.seqs: dict[str, int] = {}
        self.devices = itertools.count(1)

    def join(self, user: str, conn: Any) -> dict[str, Any]:
        self.online.setdefault(user, []).append(conn)
        head = self.seqs.get(user, 0)
        return {
            "type": "welcome",
            "user_id": user,
            "device_id": next(self.devices),
            "inbox_head": head,
        }

    def leave(self, user: str | None, conn: Any) -> None:
        conns = self.online.get(user or "")
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self.online[user or ""]

    def relay(
        self, sender: str, frame: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        """(ack for the sender, msg for the recipient, the recipient's connections)."""
        to = str(frame["to"])
        a, b = sorted((sender, to))
        channel = f"dm:{a}:{b}"
        msg_id = self.msg_ids[channel] = self.msg_ids.get(channel, 0) + 1
        seq_s = self.seqs[sender] = self.seqs.get(sender, 0) + 1
        seq_r = self.seqs[to] = self.seqs.get(to, 0) + 1
        ts = time.time_ns() // 1_000_000
        ack = {
            "type": "ack",
            "ref": frame["ref"],
            "channel": channel,
            "msg_id": msg_id,
            "ts": ts,
            "inbox": seq_s,
        }
        msg = {
            "type": "msg",
            "inbox": seq_r,
            "channel": channel,
            "msg_id": msg_id,
            "from": sender,
            "body": frame["body"],
            "ts": ts,
        }
        return ack, msg, self.online.get(to, [])


# -- trio + wsproto
class TrioConn:
    """Output as in chatd: written straight to the socket, buffered only while the reader is
    handling a read (corked) or the kernel buffer is full (then one flusher task drains it)."""

    __slots__ = ("sock", "ws", "binary", "user", "out", "corked", "flushing", "nursery")

    def __init__(self, sock: socket.socket, nursery: Any) -> None:
        from wsproto import ConnectionType, WSConnection

        self.sock = sock
        self.ws = WSConnection(ConnectionType.SERVER)
        self.binary = True
        self.user: str | None = None
        self.out: list[bytes] | None = None
        self.corked = False
        self.flushing = False
        self.nursery = nursery

    def send_frame(self, frame: dict[str, Any]) -> None:
        from wsproto.events import Message

        self.write(self.ws.send(Message(data=encode(frame, self.binary))))  # type: ignore[type-var]

    def write(self, data: bytes) -> None:
        if self.corked or self.out is not None:
            if self.out is None:
                self.out = []
            self.out.append(data)
            if not self.corked and not self.flushing:
                self.nursery.start_soon(self._flush)
                self.flushing = True
            return
        self._send_now(data)

    def uncork(self) -> None:
        self.corked = False
        if self.out is not None and not self.flushing:
            data, self.out = b"".join(self.out), None
            self._send_now(data)

    def _send_now(self, data: bytes) -> None:
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return
        if sent < len(data):
            self.out = [data[sent:]]
            self.flushing = True
            self.nursery.start_soon(self._flush)

    async def _flush(self) -> None:
        import trio

        try:
            while self.out:
                await trio.lowlevel.wait_writable(self.sock)
                data, self.out = b"".join(self.out), None
                try:
                    sent = self.sock.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    self.out = [data[sent:]]
        except (OSError, trio.ClosedResourceError):
            self.out = None
        finally:
            self.flushing = False


async def _trio_conn(hub: Hub, sock: socket.socket, nursery: Any) -> None:
    import trio
    from wsproto.events import AcceptConnection, CloseConnection, Message, Ping, Request

    conn = TrioConn(sock, nursery)
    ws = conn.ws
    try:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                return
            ws.receive_data(data)
            conn.corked = True  # replies to one read go out in one send
            closing = False
            try:
                for event in ws.events():
                    if isinstance(event, Request):
                        proto = next((p for p in event.subprotocols if p in SUBPROTOCOLS), None)
                        conn.binary = proto == SUBPROTOCOLS[0]
                        conn.write(ws.send(AcceptConnection(subprotocol=proto)))
                    elif isinstance(event, Message):
                        _trio_frame(hub, conn, decode(event.data))
                    elif isinstance(event, Ping):
                        conn.write(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        conn.write(ws.send(event.response()))
                        closing = True
            finally:
                conn.uncork()
            if closing:
                return
    finally:
        hub.leave(conn.user, conn)
        conn.out = None
        trio.lowlevel.notify_closing(sock)
        sock.close()


def _trio_frame(hub: Hub, conn: TrioConn, frame: dict[str, Any]) -> None:
    from wsproto.events import Message

    kind = frame.get("type")
    if conn.user is None:
        if kind == "hello":
            conn.user = str(frame.get("token"))
            conn.send_frame(hub.join(conn.user, conn))
        return
    if kind == "send":
        ack, msg, targets = hub.relay(conn.user, frame)
        conn.send_frame(ack)
        payloads: dict[bool, bytes | str] = {}
        for target in targets:
            if target.binary not in payloads:
                payloads[target.binary] = encode(msg, target.binary)
            data = payloads[target.binary]
            target.write(target.ws.send(Message(data=data)))  # type: ignore[type-var]
    elif kind == "ping":
        conn.send_frame({"type": "pong"})


async def serve_trio(host: str, port: int) -> None:
    import trio

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(4096)
    listener.setblocking(False)
    hub = Hub()
    print(
        f"baseline listening on ws://{host}:{listener.getsockname()[1]}",
        file=sys.stderr,
        flush=True,
    )
    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(listener)
            while True:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError:
                    await trio.sleep(0.1)
                    break
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(_trio_conn, hub, sock, nursery)


# -- asyncio + uvloop + websockets
async def serve_websockets(host: str, port: int) -> None:
    import asyncio

    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    hub = Hub()

    async def handler(ws: ServerConnection) -> None:
        binary = ws.subprotocol != "chatd.v1.json"
        user: str | None = None
        try:
            async for data in ws:
                frame = decode(data)
                kind = frame.get("type")
                if user is None:
                    if kind == "hello":
                        user = str(frame.get("token"))
                        await ws.send(encode(hub.join(user, ws), binary))
                    continue
                if kind == "send":
                    ack, msg, targets = hub.relay(user, frame)
                    await ws.send(encode(ack, binary))
                    for target in targets:
                        await target.send(encode(msg, target.subprotocol != "chatd.v1.json"))
                elif kind == "ping":
                    await ws.send(encode({"type": "pong"}, binary))
        except ConnectionClosed:
            pass
        finally:
            hub.leave(user, ws)

    async with serve(
        handler,
        host,
        port,
        subprotocols=SUBPROTOCOLS,  # type: ignore[arg-type]
        compression=None,
        ping_interval=None,
        max_size=1 << 20,
        backlog=4096,
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"baseline listening on ws://{host}:{bound}", file=sys.stderr, flush=True)
        await asyncio.Future()  # until killed


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.baselines")
    p.add_argument("kind", choices=["trio", "websockets"])
    p.add_argument("--listen", default="127.0.0.1:0")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if args.kind == "trio":
        import trio

        trio.run(serve_trio, host, int(port))
    else:
        import uvloop

        uvloop.run(serve_websockets(host, int(port)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
