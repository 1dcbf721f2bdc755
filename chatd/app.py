"""The application object: config, storage and the domain services, wired together once."""

from __future__ import annotations

from urllib.parse import urlsplit

import trio

from chatd.config import Config
from chatd.domain.accounts import Accounts
from chatd.domain.groups import Groups
from chatd.domain.messaging import Messenger
from chatd.domain.presence import Presence
from chatd.domain.ratelimit import RateLimiter
from chatd.domain.receipts import Receipts
from chatd.domain.sessions import Sessions
from chatd.domain.sweeper import Sweeper
from chatd.net.admission import ConnectionLimits
from chatd.net.api import Api
from chatd.net.websocket import WsServer
from storage import Store


class App:
    def __init__(self, config: Config, store: Store, nursery: trio.Nursery, port: int) -> None:
        self.config = config
        self.store = store
        #: Where helper tasks that belong to no single request run (output flushers).
        self.nursery = nursery
        self.draining = False
        #: TCP connections (HTTP or WebSocket), counted at accept, total and per address
        self.connections = ConnectionLimits(
            config.server.max_connections, config.limits.max_connections_per_ip
        )
        self.http_busy = 0  # HTTP requests being handled right now (drain waits for them)
        self._idle = trio.Event()
        server = config.server
        self.public_url = server.public_url.rstrip("/") or f"http://{server.host}:{port}"
        parts = urlsplit(self.public_url)
        self.public_origin = f"{parts.scheme}://{parts.netloc}"
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        self.ws_url = f"{ws_scheme}://{parts.netloc}{parts.path}/v1/ws"
        limits = config.limits
        self.limiters = {
            "send": RateLimiter(limits.send_rate, limits.send_burst),
            "login": RateLimiter(limits.login_rate, limits.login_burst),
            "signup": RateLimiter(limits.signup_rate, limits.signup_burst),
            "api": RateLimiter(limits.api_rate, limits.api_burst),
        }
        self.sessions = Sessions()
        self.accounts = Accounts(store, config.security)
        self.messenger = Messenger(self)
        self.receipts = Receipts(self)
        self.groups = Groups(self)
        self.presence = Presence(self)
        self.sweeper = Sweeper(self)
        self.ws = WsServer(self)
        self.api = Api(self)

    @property
    def open_connections(self) -> int:
        """TCP connections being served (HTTP or WebSocket), counted from accept."""
        return self.connections.open

    @property
    def refused_connections(self) -> int:
        """Connections closed at accept: over ``server.max_connections`` or far over the
        per-address cap."""
        return self.connections.dropped

    def check_idle(self) -> None:
        """Called as connections and requests end: wakes :meth:`wait_idle` while draining."""
        if self.draining and not self.ws.conns and not self.http_busy:
            self._idle.set()

    async def wait_idle(self) -> None:
        """While draining: return once no WebSocket is open and no HTTP request is in progress."""
        self.check_idle()
        await self._idle.wait()
