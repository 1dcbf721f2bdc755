"""A test-only WebSocket echo endpoint, for protocol conformance runs (scripts/autobahn).

Served at :data:`ECHO_PATH` only when the config sets ``testing.websocket_echo = true`` (off by
default; never in production: it takes no hello and no token). An :class:`EchoConn` *is* a
:class:`~chatd.net.websocket.Conn`: the same wsproto handling, fragment reassembly, byte cap
(``limits.max_frame_bytes``), outbound buffer, ping/pong and close handshake as ``/v1/ws``;
only what a whole data message does differs: it is sent back as it came, text as text and
binary as binary, instead of being parsed as a chat frame. So the Autobahn|Testsuite run
measures the connection layer chat clients get (docs/conformance.md).
"""

from __future__ import annotations

import socket

from chatd.net.websocket import Conn, WsServer
from chatd.protocol.frames import ws_frame

ECHO_PATH = "/v1/testing/echo"


class EchoConn(Conn):
    """A connection whose data messages are echoed; everything else is :class:`Conn`'s."""

    __slots__ = ("max_fragments",)

    #: no hello is coming: no hello deadline
    awaits_hello = False

    def __init__(self, srv: WsServer, sock: socket.socket, trailing: bytes, peer: str) -> None:
        super().__init__(srv, sock, False, trailing, peer)
        # The conformance run sends 4 MiB in 64-byte fragments; /v1/ws keeps its own cap.
        self.max_fragments = srv.config.testing.echo_max_fragments

    def _on_frame(self, data: str | bytes) -> None:
        # Written as chatd writes its chat frames, not through wsproto: making wsproto for a
        # reply would move the connection off the fast path (Conn._on_bytes) for good, and
        # the conformance run would test that path on one frame per case only.
        if isinstance(data, str):
            self._write(ws_frame(data.encode(), OP_TEXT))
        else:
            self._write(ws_frame(bytes(data), OP_BINARY))


OP_TEXT, OP_BINARY = 0x1, 0x2


def start_echo(ws: WsServer, sock: socket.socket, trailing: bytes, peer: str = "") -> None:
    """Run an upgraded socket as an echo connection, tracked and drained like any WebSocket."""
    ws.run_conn(EchoConn(ws, sock, trailing, peer))
