"""CPU of the loop side's per-frame work, in-process: the read path's parsing and the codec.

    python -m bench.loopmicro [--before-tree DIR] [--rounds 5] [--n 20000]

- Parsing: ``Conn._on_bytes`` (the fast path, chatd/net/websocket.py) against wsproto's
  ``receive_data`` + ``events()`` (the read path before issue 18) on the same bytes, with what
  each does for a frame (a pong for a ping) and nothing of the domain.
- Codec: ``frames.encode`` and ``frames.parse(frames.decode(...))`` of this tree against the
  ``chatd/protocol/frames.py`` of ``--before-tree`` (a worktree of an older commit), if given.

Each figure is the minimum over ``--rounds`` of process CPU time per call, alternating the two
sides, so other load on the machine inflates both sides alike and the minimum discards most of
it. Ratios are what to compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import msgpack
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Message, Ping

from chatd.net.websocket import Conn
from chatd.protocol import frames


def client_frame(opcode: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    n = len(payload)
    header = (
        bytes((0x80 | opcode, 0x80 | n))
        if n < 126
        else bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    )
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return header + mask + (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class _Sink(Conn):
    """A connection whose frames go nowhere: only the parsing is measured."""

    __slots__ = ()

    def _on_frame(self, data: str | bytes) -> None:
        pass

    def _write(self, data: bytes) -> None:
        pass

    def _uncork(self) -> None:
        self.corked = False


def best(fns: dict[str, Callable[[], Any]], rounds: int, n: int) -> dict[str, float]:
    """Minimum CPU microseconds per call of each function, alternating them."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.process_time()
            for _ in range(n):
                fn()
            out[name].append((time.process_time() - t) / n * 1e6)
    return {name: min(v) for name, v in out.items()}


def parsing(rounds: int, n: int) -> list[tuple[str, float, float]]:
    send = msgpack.packb({"type": "send", "ref": "r1", "to": "bob", "body": "x" * 32})
    inputs = {
        "one send frame": client_frame(0x2, send),
        "one ping (and its pong)": client_frame(0x9, b""),
        "10 send frames in one read": client_frame(0x2, send) * 10,
    }
    a, b = socket.socketpair()
    srv = types.SimpleNamespace(fast_max=0xFFFF, max_frame=1 << 20)
    conn = _Sink(srv, a, True, b"")  # type: ignore[arg-type]
    ws = Connection(ConnectionType.SERVER)

    def old(data: bytes) -> None:
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, Message):
                if event.message_finished and len(event.data) <= 1 << 18:
                    pass
            elif isinstance(event, Ping):
                ws.send(event.response())

    rows = []
    for name, data in inputs.items():
        fns = {"old": lambda d=data: old(d), "new": lambda d=data: conn._on_bytes(d)}
        got = best(fns, rounds, n)
        rows.append((name, got["old"], got["new"]))
    a.close()
    b.close()
    return rows


def codec(before_tree: str, rounds: int, n: int) -> list[tuple[str, float, float]]:
    spec = importlib.util.spec_from_file_location(
        "_before_frames", f"{before_tree}/chatd/protocol/frames.py"
    )
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    sys.modules["_before_frames"] = old  # dataclasses look their module up
    spec.loader.exec_module(old)
    ack = {"type": "ack", "ref": "r123", "msg_id": 12345, "ts": 1732590000000, "channel": "dm:a:b"}
    msg = {"type": "msg", "msg_id": 12345, "channel": "dm:a:b", "from": "a", "body": "x" * 32}
    send = msgpack.packb({"type": "send", "ref": "r1", "to": "bob", "body": "y" * 32})
    cases: dict[str, Callable[[Any], Any]] = {
        "encode ack (msgpack)": lambda m: m.encode(ack, True),
        "encode msg (msgpack)": lambda m: m.encode(msg, True),
        "encode msg (JSON)": lambda m: m.encode(msg, False),
        "decode + parse a send (msgpack)": lambda m: m.parse(m.decode(send)),
    }
    rows = []
    for name, fn in cases.items():
        fns = {"old": lambda f=fn: f(old), "new": lambda f=fn: f(frames)}
        got = best(fns, rounds, n)
        rows.append((name, got["old"], got["new"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.loopmicro")
    p.add_argument("--before-tree", help="a worktree of the commit to compare the codec with")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=20000)
    args = p.parse_args(argv)
    rows = [("parsing: " + r[0], r[1], r[2]) for r in parsing(args.rounds, args.n)]
    if args.before_tree:
        rows += [
            ("codec: " + r[0], r[1], r[2]) for r in codec(args.before_tree, args.rounds, args.n)
        ]
    print(f"{'':40} {'before us':>10} {'after us':>10} {'ratio':>6}")
    for name, old, new in rows:
        print(f"{name:40} {old:10.2f} {new:10.2f} {new / old:6.2f}")


if __name__ == "__main__":
    main()
