"""``serve()``: one server process from start to drain.

It opens the listening socket and the storage, builds the object graph (``chatd/app.py``),
runs the accept loop and the background tasks, and drains on request. Shutdown follows
hypercorn's shape: :meth:`Server.drain` stops the accept loop, marks the server draining
(``/healthz`` answers 503), closes every WebSocket with 1001 and lets in-flight HTTP requests
finish; connections get ``server.drain_timeout`` seconds, then are cancelled. Storage closes
last, after the committer has written everything queued.

Operations (``chatd/ops/``): the data directory's lock is held for the whole run; systemd hears
READY=1 once listening, WATCHDOG=1 and STATUS= from a task on the loop, STOPPING=1 when the
drain starts; WebSockets are closed in slices spread over the first half of the drain window
(``chatd/ops/drain.py``); the admin socket serves ``chatd user ...`` until the end.
"""

from __future__ import annotations

import gc
import sys

import trio

from chatd.app import App, build
from chatd.config import Config
from chatd.domain.ratelimit import RateLimiter
from chatd.net import listener as listening
from chatd.net import sockets as net
from chatd.ops import drain, memdebug, notify
from chatd.ops.admin import AdminServer
from chatd.ops.datalock import DataLock
from chatd.ops.memdebug import MemoryReport
from chatd.ops.users import UserAdmin
from storage import Store


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

    def status(self) -> str:
        """One line for systemd's STATUS= (``systemctl status``)."""
        app = self.app
        state = "draining" if app.draining else "serving"
        return (
            f"{state}: {app.open_connections} connections, {len(app.lifecycle.websockets)} "
            f"WebSockets, {app.sessions.users()} users online"
        )

    def limiters(self) -> dict[str, RateLimiter]:
        """The token buckets SIGHUP may retune (``chatd/ops/reload.py``), by limit name."""
        app = self.app
        return {
            "send": app.messenger.send_limiter,
            "history": app.messenger.history_limiter,
            "read": app.receipts.read_limiter,
            "typing": app.receipts.typing_limiter,
            **app.api.limiters,  # api, login, signup
        }

    def counters(self) -> dict[str, object]:
        """The admin socket's ``stats``."""
        app = self.app
        return {
            "open_connections": app.open_connections,
            "websockets": len(app.lifecycle.websockets),
            "online_users": app.sessions.users(),
            "draining": app.draining,
            "storage": app.store.stats(),
        }

    def tables(self) -> dict[str, int]:
        """Entries of the tables that grow with users and connections, for ``debug.memory``."""
        app = self.app
        lim = self.limiters()
        out = {f"ratelimit_{name}_keys": len(limiter) for name, limiter in lim.items()}
        return out | {
            "sessions_users": app.sessions.users(),
            "sessions_devices": sum(1 for _ in app.sessions),
            "websockets": len(app.lifecycle.websockets),
            "presence_leaving": len(app.presence._leaving),
            "receipts_waiting": len(app.receipts._waiting),
            "id_cache_entries": len(app.store.env.counters.committed),
            "heartbeat_slots": len(app.heartbeats._wheel),
            "heartbeat_watched": sum(len(s) for s in app.heartbeats._wheel.values()),
            "close_codes": len(app.lifecycle.websockets.closes),
            "push_streams": len(app.push.worker.streams) if app.push else 0,
            "push_delivered_users": len(app.push.deliveries.highest) if app.push else 0,
            "push_online_users": len(app.push.audience.online()) if app.push else 0,
        }


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
    discovery = config.discovery()
    memdebug.start_from_environment()  # CHATD_TRACEMALLOC=<frames>: off unless set
    lock = DataLock(cfg.data).acquire()
    try:
        listener = listening.open_listener(cfg.host, cfg.port)
    except BaseException:
        lock.release()
        raise
    peer_listener = None
    try:
        if discovery is not None and len(discovery.shards) > 1:
            shard = discovery.shard(cfg.shard)
            peer_listener = listening.open_listener(shard.peer_host, shard.peer_port)
        store = Store(
            cfg.data,
            map_size=config.storage.map_size,
            max_map_size=config.storage.max_map_size,
            sync=config.storage.sync,
            writemap=config.storage.writemap,
            max_batch=config.storage.max_batch,
            max_queue_bytes=config.storage.max_queue_bytes,
        )
    except BaseException:
        listener.close()
        if peer_listener is not None:
            peer_listener.close()
        lock.release()
        raise
    notifier = notify.from_environment()
    host, port = listener.getsockname()[:2]
    try:
        async with trio.open_nursery() as root:
            await root.start(store.run)
            try:
                async with trio.open_nursery() as conns:
                    app = build(config, store, conns, port, discovery)
                    server = Server(app, host, port)
                    accept_scope = trio.CancelScope()
                    accept_rate = RateLimiter(cfg.accept_rate, cfg.accept_burst, max_keys=1)
                    conns.start_soon(
                        listening.accept_loop, app.http, listener, conns, accept_scope, accept_rate
                    )
                    if app.node is not None and app.peer_http is not None and peer_listener:
                        # Peers keep being served while this shard drains (until the end).
                        peer_scope = trio.CancelScope()
                        conns.start_soon(
                            listening.accept_loop, app.peer_http, peer_listener, conns, peer_scope
                        )
                        conns.start_soon(app.node.run)
                    conns.start_soon(app.heartbeats.run)
                    conns.start_soon(app.sweeper.run)
                    if app.push is not None:
                        conns.start_soon(app.push.run)
                    admin = AdminServer(
                        UserAdmin(store, app.accounts, app.sessions, app.router),
                        server.counters,
                        MemoryReport(server.tables),
                    )
                    await conns.start(admin.run, cfg.data)
                    conns.start_soon(notifier.keepalive, server.status)
                    _tune_gc()
                    print(f"chatd listening on http://{host}:{port}", file=sys.stderr, flush=True)
                    notifier.ready(server.status())
                    task_status.started(server)
                    await server._drain.wait()
                    notifier.stopping()
                    accept_scope.cancel()
                    app.lifecycle.draining = True
                    # What is left once WebSockets are closed and requests answered is idle
                    # keep-alive connections waiting for a next request: cancel them.
                    with trio.move_on_after(cfg.drain_timeout):
                        window = cfg.drain_timeout * drain.SPREAD
                        await drain.close_spread(app.lifecycle.websockets, window)
                        await app.lifecycle.wait_idle()
                    conns.cancel_scope.cancel()
            finally:
                net.close(listener)
                if peer_listener is not None:
                    net.close(peer_listener)
                store.close()
                notifier.close()
    finally:
        lock.release()  # only once the environment is closed
