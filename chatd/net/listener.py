"""``serve()``: listen, accept, run connections, drain on request.

Shutdown follows hypercorn's shape: :meth:`Server.drain` stops the accept loop, marks the app
draining (``/healthz`` answers 503), closes every WebSocket with 1001 and lets in-flight HTTP
requests finish; connections get ``server.drain_timeout`` seconds, then are cancelled. Storage
closes last, after the committer has written everything queued.
"""

from __future__ import annotations

import errno
import gc
import logging
import socket
import sys

import trio

from chatd.app import App
from chatd.config import Config
from chatd.domain.errors import Unavailable
from chatd.domain.presence import set_keepalive
from chatd.net import sockets as net
from chatd.net.admission import Admission
from chatd.net.http import HttpConnection
from storage import Store

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
PER_IP_RETRY_AFTER = 5.0  # seconds, for a connection over limits.max_connections_per_ip


class Server:
    """Handle on a running server, given to ``task_status.started()``."""

    def __init__(self, app: App, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self._drain = trio.Event()

    def drain(self) -> None:
        self._drain.set()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def _tune_gc() -> None:
    """Fewer, cheaper collections: what start-up built (config, app, caches) is frozen out of
    the collector's view and the young generation may grow before a pass. Called once, before
    the first accept: freezing later would also freeze request-scoped objects alive at that
    moment, and a cycle among them would never be collected (docs/operations.md has the
    measurement that dropped the periodic freeze)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def serve(
    config: Config, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run chatd until :meth:`Server.drain`; ``task_status.started(server)`` once listening."""
    cfg = config.server
    listener = _listen(cfg.host, cfg.port)
    try:
        store = Store(
            cfg.data,
            map_size=config.storage.map_size,
            max_map_size=config.storage.max_map_size,
            sync=config.storage.sync,
            max_batch=config.storage.max_batch,
            max_queue_bytes=config.storage.max_queue_bytes,
        )
    except BaseException:
        listener.close()
        raise
    host, port = listener.getsockname()[:2]
    async with trio.open_nursery() as root:
        await root.start(store.run)
        try:
            async with trio.open_nursery() as conns:
                app = App(config, store, conns, port)
                server = Server(app, host, port)
                accept_scope = trio.CancelScope()
                conns.start_soon(_accept_loop, app, listener, conns, accept_scope)
                conns.start_soon(app.presence.run)
                conns.start_soon(app.sweeper.run)
                _tune_gc()
                print(f"chatd listening on http://{host}:{port}", file=sys.stderr, flush=True)
                task_status.started(server)
                await server._drain.wait()
                accept_scope.cancel()
                app.draining = True
                app.ws.close_all(1001, "server draining")
                # What is left once WebSockets are closed and requests answered is idle
                # keep-alive connections waiting for a next request: cancel them.
                with trio.move_on_after(cfg.drain_timeout):
                    await app.wait_idle()
                conns.cancel_scope.cancel()
        finally:
            net.close(listener)
            store.close()


async def _accept_loop(
    app: App, listener: socket.socket, conns: trio.Nursery, scope: trio.CancelScope
) -> None:
    with scope:
        while True:
            await trio.lowlevel.wait_readable(listener)
            while True:
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
                admission = app.connections.admit(sock, client)
                if admission is Admission.DROP:
                    sock.close()  # at capacity: refuse at once rather than leave it hanging
                    continue
                if not _tune_socket(app, sock, client):
                    continue
                refusal = None
                if admission is Admission.REFUSE:
                    refusal = Unavailable(
                        "too many connections from your address", retry_after=PER_IP_RETRY_AFTER
                    )
                conns.start_soon(HttpConnection(app, sock, client, refusal).serve)


def _tune_socket(app: App, sock: socket.socket, client: str) -> bool:
    """Non-blocking, no Nagle delay, kernel keepalive. False (and the socket closed) if the
    options fail, as they may for a connection reset between accept and here."""
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        set_keepalive(sock, app.config.presence)
    except OSError as exc:
        log.debug("connection from %s: socket options failed (%s); closed", client, exc)
        app.connections.release(sock)
        sock.close()
        return False
    return True
