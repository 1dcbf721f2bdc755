"""One HTTP/1.1 POST on trio and h11, for webhooks and push services.

Hardened for URLs chosen by users: it connects to the address the SSRF guard checked (never
resolving again), with a connect timeout (TCP and TLS) and one deadline for the whole
response; it follows no redirect (a 3xx is just a status), reads at most ``MAX_BODY`` bytes of
the response body and closes the connection after each request (``Connection: close``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import h11
import trio

from chatd.push.guard import Target

MAX_BODY = 4096  # response bytes read at most (a status is all a sender needs)
USER_AGENT = b"chatd-push/1"


class SendFailed(Exception):
    """No response: the connection failed, timed out or broke (worth retrying)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


async def post(
    target: Target,
    address: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    connect_timeout: float,
    read_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> Reply:
    """POST ``body`` to ``target`` at ``address`` (an IP the guard checked); its reply, or
    SendFailed. TLS for ``https`` verifies the certificate against ``target.host``."""
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(connect_timeout):
            tcp = await trio.open_tcp_stream(address, target.port)
            stream = tcp
            if target.scheme == "https":
                context = ssl_context or ssl.create_default_context()
                tls = trio.SSLStream(tcp, context, server_hostname=target.host)
                stream = tls
                await tls.do_handshake()
        with trio.fail_after(read_timeout):
            return await _exchange(stream, target, body, headers)
    except (OSError, trio.TooSlowError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        raise SendFailed(f"{target.host}:{target.port}: {type(exc).__name__}: {exc}") from None
    finally:
        if stream is not None:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                try:
                    await stream.aclose()
                except (OSError, trio.BrokenResourceError):
                    pass


async def _exchange(
    stream: trio.abc.Stream, target: Target, body: bytes, headers: list[tuple[bytes, bytes]]
) -> Reply:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=16 * 1024)
    default = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    host += "" if target.port == default else f":{target.port}"
    request = h11.Request(
        method="POST",
        target=target.path.encode(),
        headers=[
            (b"host", host.encode()),
            (b"user-agent", USER_AGENT),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *headers,
        ],
    )
    await stream.send_all(conn.send(request) + conn.send(h11.Data(data=body)))
    await stream.send_all(conn.send(h11.EndOfMessage()))
    status, reply_headers, chunks, size = 0, {}, [], 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(8192)
            if not data and status:
                break  # closed after the head: the body was cut short, the status stands
            conn.receive_data(bytes(data))  # b"" before a response: h11 raises RemoteProtocolError
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            reply_headers = {k.lower(): v for k, v in event.headers}
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data)[: MAX_BODY - size])
            size += len(chunks[-1])
            if size >= MAX_BODY:
                break
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    return Reply(status, reply_headers, b"".join(chunks))
