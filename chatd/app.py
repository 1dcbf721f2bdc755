"""The composition root: builds every object of a server process, once, in dependency order.

Each object gets its collaborators as constructor arguments; nothing reaches another part
through a shared object. :class:`App` only holds the result for the listener (which runs the
tasks and drains) and for tests that look inside a running server.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

from chatd.cluster.applier import Applier
from chatd.cluster.gateway import Gateway, PeerApi
from chatd.cluster.node import Node, build_node
from chatd.config import Config
from chatd.discovery import Discovery
from chatd.domain.accounts import Accounts
from chatd.domain.groups import Groups
from chatd.domain.messaging import Messenger
from chatd.domain.ports import LocalRouter, Router
from chatd.domain.presence import Presence
from chatd.domain.ratelimit import RateLimiter
from chatd.domain.receipts import Receipts
from chatd.domain.sessions import Sessions
from chatd.domain.sweeper import Sweeper
from chatd.net.admission import ConnectionLimits
from chatd.net.api import Api
from chatd.net.handshake import Origins
from chatd.net.heartbeat import Heartbeats
from chatd.net.http import HttpServer
from chatd.net.lifecycle import Lifecycle
from chatd.net.metrics import Sample
from chatd.net.websocket import WsServer
from chatd.ops.meter import MeteredMessenger
from chatd.ops.users import GuardedAccounts
from chatd.push.service import Push
from storage import Store


@dataclass(eq=False)
class App:
    config: Config
    store: Store
    router: Router
    lifecycle: Lifecycle
    sessions: Sessions
    accounts: Accounts
    messenger: Messenger
    receipts: Receipts
    groups: Groups
    presence: Presence
    heartbeats: Heartbeats
    sweeper: Sweeper
    ws: WsServer
    api: Api
    http: HttpServer
    ws_url: str
    node: Node | None = None  # a shard of a cluster (None: the embedded single server)
    peer_http: HttpServer | None = None  # the peer listener's server, in a cluster
    push: Push | None = None  # push notifications (chatd/push/): its worker runs in serve()

    # Read-only views for the listener's log and for tests.
    @property
    def connections(self) -> ConnectionLimits:
        return self.lifecycle.connections

    @property
    def open_connections(self) -> int:
        """TCP connections being served (HTTP or WebSocket), counted from accept."""
        return self.lifecycle.connections.open

    @property
    def refused_connections(self) -> int:
        """Connections closed at accept: over ``server.max_connections`` or far over the
        per-address cap."""
        return self.lifecycle.connections.dropped

    @property
    def draining(self) -> bool:
        return self.lifecycle.draining

    @property
    def http_busy(self) -> int:
        return self.lifecycle.http_busy


def public_urls(config: Config, port: int) -> tuple[str, str]:
    """(public origin, WebSocket URL) of this server, from ``server.public_url`` or the port."""
    server = config.server
    public_url = server.public_url.rstrip("/") or f"http://{server.host}:{port}"
    parts = urlsplit(public_url)
    ws_scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{parts.scheme}://{parts.netloc}", f"{ws_scheme}://{parts.netloc}{parts.path}/v1/ws"


def collect(
    store: Store,
    lifecycle: Lifecycle,
    sessions: Sessions,
    messenger: MeteredMessenger | None = None,
    node: Node | None = None,
) -> list[Sample]:
    """What ``GET /metrics`` reports (docs/operations.md lists every series)."""
    st = store.stats()
    ws = lifecycle.websockets
    out = [
        Sample("chatd_commit_batches_total", "counter", "group-commit batches", st["batches"]),
        Sample("chatd_commit_ops_total", "counter", "writes committed", st["ops"]),
        Sample("chatd_commit_queue_bytes", "gauge", "bytes waiting to commit", st["queued_bytes"]),
        Sample("chatd_lmdb_map_bytes", "gauge", "size of the LMDB map", st["map_size"]),
        Sample("chatd_lmdb_used_bytes", "gauge", "bytes of the map in use", st["map_used"]),
        Sample(
            "chatd_open_connections", "gauge", "TCP connections served", lifecycle.connections.open
        ),
        Sample(
            "chatd_refused_connections_total",
            "counter",
            "connections closed at accept (over a connection cap)",
            lifecycle.connections.dropped,
        ),
        Sample("chatd_websockets", "gauge", "open WebSocket connections", len(ws)),
        Sample("chatd_online_users", "gauge", "users with a device online", sessions.users()),
        Sample("chatd_draining", "gauge", "1 while the server drains", int(lifecycle.draining)),
        Sample(
            "chatd_outbound_overflows_total",
            "counter",
            "WebSockets closed 1008 for a full outbound queue (slow consumers)",
            ws.overflows,
        ),
        Sample(
            "chatd_outbound_queued_bytes",
            "gauge",
            "bytes waiting in WebSocket output buffers (past the kernel's socket buffers)",
            sum(conn.out_bytes for conn in ws),
        ),
        Sample(
            "chatd_write_stalls_total",
            "counter",
            "WebSockets closed 1008 after limits.write_stall_timeout with nothing written",
            ws.stalls,
        ),
        Sample(
            "chatd_accepted_connections_total",
            "counter",
            "TCP connections accepted (before the connection caps)",
            lifecycle.connections.accepted,
        ),
    ]
    for code, count in sorted(ws.closes.items()):
        out.append(
            Sample(
                "chatd_websocket_closes_total",
                "counter",
                "WebSockets ended, by the close code the server used (0: none, the peer went)",
                count,
                (("code", str(code)),),
            )
        )
    if messenger is not None:
        lat = messenger.ack_latency_ms
        out += [
            Sample(
                "chatd_messages_accepted_total",
                "counter",
                "messages committed on this shard (resends of a known ref not counted)",
                messenger.accepted,
            ),
            Sample(
                "chatd_messages_delivered_total",
                "counter",
                "msg frames handed to online devices",
                messenger.delivered,
            ),
            Sample(
                "chatd_ack_latency_seconds",
                "histogram",
                "from a message's acceptance (its ts) to its durable ack",
                lat.total / 1000,
                buckets=tuple(lat.cumulative(1 / 1000)),
            ),
        ]
    if node is not None:
        broker = node.broker.health()
        out += [
            Sample(
                "chatd_cluster_broker_up",
                "gauge",
                "1 while this shard's link to the broker (Redis) is up",
                int(broker["state"] == "up"),
                (("shard", node.here),),
            ),
            Sample(
                "chatd_cluster_outbox_pending",
                "gauge",
                "relayed records published but not yet confirmed by the broker",
                node.publisher.pending(),
                (("shard", node.here),),
            ),
        ]
    return out


def build(
    config: Config,
    store: Store,
    nursery: trio.Nursery,
    port: int,
    discovery: Discovery | None = None,
) -> App:
    """Every object of one server, wired. ``nursery`` runs helper tasks (output flushers).
    With ``discovery``, the server is one shard of a cluster (``chatd/cluster/``)."""
    limits = config.limits
    public_origin, ws_url = public_urls(config, port)
    push = Push(config, store)  # its session table tells the push audience who is online
    sessions: Sessions = push.sessions
    node = None
    if discovery is not None and len(discovery.shards) > 1:  # one shard needs no broker
        node = build_node(discovery, config.server.shard, store, sessions, nursery)
    router: Router = node.router if node else LocalRouter()
    lifecycle = Lifecycle(
        ConnectionLimits(config.server.max_connections, limits.max_connections_per_ip)
    )
    accounts = GuardedAccounts(
        store,
        config.security,
        relay=node.relay if node else None,
        exists=node.forwarding.exists if node else None,
    )
    messenger = MeteredMessenger(
        store,
        sessions,
        router,
        send_limiter=RateLimiter(limits.send_rate, limits.send_burst),
        history_limiter=RateLimiter(limits.history_rate, limits.history_burst),
        max_body=limits.max_body_chars,
        reply_bytes=limits.outbound_queue_bytes // 2,
        outbox_hooks=(push.hook,),
        relay=node.relay if node else None,
        remote=node.forwarding if node else None,
    )
    if node is not None:
        node.applier = Applier(node.here, store, messenger, node.publisher, node.broker, node.relay)
        node.forwarding.applier = node.applier
        node.forwarding.send_again = messenger.send
        node.forwarding.account = lambda user_id: store.account(user_id) is not None
    receipts = Receipts(
        store,
        sessions,
        read_limiter=RateLimiter(limits.read_rate, limits.read_burst),
        typing_limiter=RateLimiter(limits.typing_rate, limits.typing_burst),
        elsewhere=node.live if node else None,
    )
    groups = Groups(
        store,
        max_members=limits.max_group_members,
        exists=node.forwarding.exists if node else None,
        local=(lambda channel: router.sequencer(channel).local) if node else None,
        relay=node.relay if node else None,
    )
    presence = Presence(
        store,
        sessions,
        grace=config.presence.grace,
        draining=lambda: lifecycle.draining,
        elsewhere=node.live if node else None,
        local=(lambda user_id: router.home(user_id).local) if node else None,
    )
    heartbeats = Heartbeats(
        config.presence.timeout, config.presence.sweep_interval, on_tick=presence.expire
    )
    sweeper = Sweeper(
        store,
        interval=config.storage.sweep_interval,
        ref_retention_hours=config.storage.ref_retention_hours,
        history_retention_days=config.storage.history_retention_days,
    )
    ws = WsServer(
        config,
        store=store,
        accounts=accounts,
        sessions=sessions,
        messenger=messenger,
        receipts=receipts,
        presence=presence,
        heartbeats=heartbeats,
        router=router,
        lifecycle=lifecycle,
        nursery=nursery,
        delivered=push.delivered,
    )
    store.gather_hooks(ws.gather)  # each batch's acks and deliveries: one send per connection
    api = Api(
        accounts=accounts,
        sessions=sessions,
        messenger=messenger,
        groups=groups,
        presence=presence,
        lifecycle=lifecycle,
        limiters={
            "api": RateLimiter(limits.api_rate, limits.api_burst),
            "login": RateLimiter(limits.login_rate, limits.login_burst),
            "signup": RateLimiter(limits.signup_rate, limits.signup_burst),
        },
        ws_url=ws_url,
        metrics=lambda: collect(store, lifecycle, sessions, messenger, node) + push.samples(),
        health=node.health if node else None,
        push=push,
    )
    origins = Origins(public_origin, config.server.allowed_origins)
    http = HttpServer(config, lifecycle, api, ws, origins)
    peer_http = None
    if node is not None:
        gateway = Gateway(api, node.router, node.peers, accounts)
        http = HttpServer(config, lifecycle, gateway, ws, origins)
        peer_api = PeerApi(
            node.discovery.secret,
            gateway,
            messenger,
            accounts,
            node.router,
            presence,
            node.publisher.handed_over,
        )
        peer_lifecycle = Lifecycle(ConnectionLimits(config.server.max_connections, 1 << 20))
        peer_http = HttpServer(config, peer_lifecycle, peer_api, ws, origins, websocket=False)
    return App(
        config=config,
        store=store,
        router=router,
        lifecycle=lifecycle,
        sessions=sessions,
        accounts=accounts,
        messenger=messenger,
        receipts=receipts,
        groups=groups,
        presence=presence,
        heartbeats=heartbeats,
        sweeper=sweeper,
        ws=ws,
        api=api,
        http=http,
        ws_url=ws_url,
        node=node,
        peer_http=peer_http,
        push=push,
    )
