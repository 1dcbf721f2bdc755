"""The listening socket and the accept loop: admission, socket options, one task each.

Each accepted socket is counted (``chatd/net/admission.py``), tuned (no Nagle delay, kernel
keepalive) and served by an :class:`~chatd.net.http.HttpConnection` task in the connections
nursery. Errors that concern one connection never end the loop (see ``ACCEPT_SKIP``).

The public listener accepts at most ``server.accept_rate`` connections per second (bursts of
``server.accept_burst``): when a restart or a network blip sends every client back at once,
the ones over the rate wait in the kernel's listen backlog (and past it, retry their SYN)
instead of taking every cycle from the connections already served.
"""

from __future__ import annotations

import errno
import logging
import socket

import trio

from chatd.config import PresenceConfig
from chatd.domain.errors import Unavailable
from chatd.domain.ratelimit import RateLimiter
from chatd.net import sockets as net
from chatd.net.admission import PER_IP_RETRY_AFTER, Admission
from chatd.net.heartbeat import set_keepalive
from chatd.net.http import HttpConnection, HttpServer
from chatd.net.proxies import limit_key

log = logging.getLogger("chatd")
#: accept(2) failing for the one connection being accepted (reset before it was accepted, a
#: firewall refusal, any error the socket took on first: Linux reports those from accept):
#: skip it and take the next. The list trio's SocketListener ignores, plus EINTR.
ACCEPT_SKIP = {
    getattr(errno, name)
    for name in (
        "EPERM ECONNABORTED EPROTO ENETDOWN ENOPROTOOPT EHOSTDOWN ENONET EHOSTUNREACH "
        "EOPNOTSUPP ENETUNREACH ENOSR ESOCKTNOSUPPORT EPROTONOSUPPORT ETIMEDOUT ECONNRESET EINTR"
    ).split()
    if hasattr(errno, name)
}
#: The process or the system is out of descriptors or memory: log, back off, retry.
ACCEPT_BACK_OFF = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
BACK_OFF_SECONDS = 0.1
#: Unsent bytes the kernel may hold for one socket (``TCP_NOTSENT_LOWAT``): past it ``send``
#: takes nothing more and the connection's own bounded buffer fills instead. Without it
#: Linux autotunes the send buffer up to ``net.ipv4.tcp_wmem``'s maximum (4 MiB), which a
#: reader that stopped fills first, silently: its outbound cap and write-stall timer
#: (``chatd/net/outbound.py``) would only start counting megabytes and many seconds later.
#: Bytes in flight to a reading peer are not counted, so throughput does not suffer.
NOTSENT_LOWAT = 128 * 1024


def open_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def accept_loop(
    http: HttpServer,
    listener: socket.socket,
    conns: trio.Nursery,
    scope: trio.CancelScope,
    rate: RateLimiter | None = None,
) -> None:
    """Accept until ``scope`` is cancelled, then close the listening socket; serve each
    connection in ``conns``. With ``rate``, one token of it per accept: the loop sleeps while
    it has none.

    Closing the listener at once when the drain cancels ``scope`` matters to clients: left
    open, the kernel would keep completing their reconnects into the listen backlog, where
    nobody reads them until the process exits and resets them (a client library that waits
    for the upgrade's answer without a timeout then hangs). Closed, they are refused at once
    and back off until the next process listens."""
    connections = http.lifecycle.connections
    keepalive = http.config.presence
    with scope:
        while True:
            await trio.lowlevel.wait_readable(listener)
            while True:
                if rate is not None:
                    wait = rate.take("")
                    if wait:
                        await trio.sleep(wait)
                        continue
                try:
                    sock, addr = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in ACCEPT_SKIP:
                        log.debug("accept: %s; skipped", exc)
                        break  # back to wait_readable: a checkpoint between retries
                    if exc.errno in ACCEPT_BACK_OFF:
                        log.error("accept: %s; backing off %.1f s", exc, BACK_OFF_SECONDS)
                        await trio.sleep(BACK_OFF_SECONDS)
                        break
                    raise
                client = addr[0]
                proxy = bool(http.proxies) and http.proxies.trusted(client)
                admission = connections.admit(sock, limit_key(client), proxy=proxy)
                if admission is Admission.DROP:
                    sock.close()  # at capacity: refuse at once rather than leave it hanging
                    continue
                if not _tune_socket(sock, client, keepalive):
                    connections.release(sock)
                    continue
                refusal = None
                if admission is Admission.REFUSE:
                    refusal = Unavailable(
                        "too many connections from your address", retry_after=PER_IP_RETRY_AFTER
                    )
                conns.start_soon(HttpConnection(http, sock, client, refusal).serve)
    if scope.cancelled_caught:  # the drain: refuse new connections from now on
        net.close(listener)


def _tune_socket(sock: socket.socket, client: str, keepalive: PresenceConfig) -> bool:
    """Non-blocking, no Nagle delay, bounded unsent bytes, kernel keepalive. False (and the
    socket closed) if the options fail, as they may for a connection reset between accept and
    here."""
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
        set_keepalive(sock, keepalive)
    except OSError as exc:
        log.debug("connection from %s: socket options failed (%s); closed", client, exc)
        sock.close()
        return False
    return True
