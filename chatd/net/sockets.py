"""Non-blocking socket I/O on trio's low-level primitives.

Connections hold a plain non-blocking ``socket.socket`` rather than a ``trio.SocketStream``:
less memory per connection, and the read loop waits for readability *before* calling ``recv``
(no speculative ``recv`` that finds nothing). Writers call ``sock.send`` directly and only wait
for writability when the kernel buffer is full.
"""

from __future__ import annotations

import socket

import trio

RECV_SIZE = 65536


async def recv(sock: socket.socket) -> bytes:
    """The next chunk of bytes; ``b""`` at end of stream."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return sock.recv(RECV_SIZE)
        except BlockingIOError:
            continue
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            return b""


async def send_all(sock: socket.socket, data: bytes | memoryview) -> None:
    """Write everything, waiting for writability as needed; ``OSError`` if the peer is gone."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            sent = 0
        view = view[sent:]
        if view:
            await trio.lowlevel.wait_writable(sock)


def close(sock: socket.socket) -> None:
    """Wake any task waiting on ``sock``, then close it."""
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()
