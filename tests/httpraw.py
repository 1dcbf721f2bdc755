"""A raw HTTP test client: bytes a real client would refuse to write, over a plain TCP socket,
and responses parsed strictly with h11 (a malformed response fails the parse)."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

import h11
import trio

TIMEOUT = 10.0  # seconds any one exchange may take


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class BadResponse(Exception):
    """The server's bytes are not a valid HTTP/1.1 response."""


def parse_one(data: bytes, *, head: bool) -> tuple[RawResponse, bytes]:
    """The first response in ``data`` (to a HEAD request if ``head``) and the bytes after it."""
    if data.startswith(b"HTTP/1.1 101 "):
        status_line, _, rest = data.partition(b"\r\n\r\n")
        return RawResponse(101, [], b""), rest
    conn = h11.Connection(h11.CLIENT)
    method = "HEAD" if head else "GET"
    conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    response: RawResponse | None = None
    body = bytearray()
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
                if event.http_version != b"1.1":
                    raise BadResponse(f"HTTP version {event.http_version!r}")
                response = RawResponse(event.status_code, headers, b"")
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise BadResponse(f"unexpected {event!r} in {data[:200]!r}")
    except h11.RemoteProtocolError as exc:
        raise BadResponse(f"{exc} in {data[:200]!r}") from None
    assert response is not None
    response.body = bytes(body)
    return response, conn.trailing_data[0]


def parse_all(data: bytes, methods: list[str]) -> list[RawResponse]:
    """Every response in ``data``, the n-th answering a request with ``methods[n]`` (GET after
    the list ends). A HEAD answer may carry a body only if the server took the request for
    something else (an unparsable request line), so a leftover that is not a response is
    re-read as a body."""
    out = []
    while data:
        method = methods[len(out)] if len(out) < len(methods) else "GET"
        response, rest = parse_one(data, head=method == "HEAD")
        if method == "HEAD" and rest and not rest.startswith(b"HTTP/1.1 "):
            response, rest = parse_one(data, head=False)
        out.append(response)
        if response.status == 101:
            break
        data = rest
    return out


async def exchange(
    port: int,
    data: bytes,
    *,
    local_address: str | None = None,
    half_close: bool = False,
) -> bytes:
    """Write ``data`` on a fresh connection while reading until the server closes it; every
    byte received. ``half_close`` sends FIN once ``data`` is written."""
    received = bytearray()
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local_address)
        async with stream:

            async def send() -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(data)
                    if half_close:
                        await stream.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                with contextlib.suppress(trio.BrokenResourceError):
                    while chunk := await stream.receive_some(65536):
                        received += chunk
    return bytes(received)


async def request(port: int, data: bytes, *, method: str = "GET", **kw: Any) -> RawResponse:
    """The one response to ``data`` (a single request; the server must close after it or the
    request must say ``connection: close``)."""
    responses = parse_all(await exchange(port, data, **kw), [method])
    assert len(responses) == 1, responses
    return responses[0]


def build(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    close: bool = True,
) -> bytes:
    """A request's bytes: ``host`` and ``content-length`` (when there is a body) added."""
    lines = [f"{method} {target} HTTP/1.1", "host: x"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if body:
        lines.append(f"content-length: {len(body)}")
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
