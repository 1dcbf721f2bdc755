"""One shard's cluster parts, built together: routing, peers, Redis, outbox, applier.

:func:`build_node` makes them (the composition root, ``chatd/app.py``, calls it when a
discovery file is given); :meth:`Node.run` runs the broker link and the outbox publisher;
the server runs :attr:`Node.http` on the shard's ``peer`` address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

from chatd.cluster.applier import Applier
from chatd.cluster.broker import Broker
from chatd.cluster.forward import Forwarding
from chatd.cluster.live import Live
from chatd.cluster.peer import Peers
from chatd.cluster.publisher import Publisher
from chatd.cluster.relay import ClusterRelay
from chatd.cluster.router import ClusterRouter
from chatd.discovery import Discovery
from chatd.domain.sessions import Sessions
from storage import Store


@dataclass(eq=False)
class Node:
    """What a shard adds to a single server. ``applier`` is set once the messenger exists."""

    discovery: Discovery
    here: str
    router: ClusterRouter
    peers: Peers
    broker: Broker
    publisher: Publisher
    relay: ClusterRelay
    forwarding: Forwarding
    live: Live
    applier: Applier | None = None

    @property
    def peer_address(self) -> tuple[str, int]:
        shard = self.discovery.shard(self.here)
        return shard.peer_host, shard.peer_port

    def health(self) -> dict[str, Any]:
        """The cluster's part of ``/healthz``: it never makes the shard unhealthy by itself
        (same-shard chat works without Redis)."""
        return {
            "shard": self.here,
            "broker": self.broker.health(),
            "outbox_pending": self.publisher.pending(),
        }

    async def run(self) -> None:
        assert self.applier is not None
        async with trio.open_nursery() as nursery:
            await nursery.start(self.broker.run, self.applier.on_records, self.live.on_live)
            nursery.start_soon(self.publisher.run)
            nursery.start_soon(self.live.run)

    async def aclose(self) -> None:
        await self.peers.aclose()


def build_node(
    discovery: Discovery, here: str, store: Store, sessions: Sessions, nursery: trio.Nursery
) -> Node:
    router = ClusterRouter(discovery, here)
    peers = Peers(
        {s.name: (s.peer_host, s.peer_port) for s in discovery.shards if s.name != here},
        discovery.secret,
    )
    broker = Broker(discovery.broker_url, here)
    publisher = Publisher(store, broker, clock=broker.clock.now)
    relay = ClusterRelay(here, router.home, publisher.kick)
    forwarding = Forwarding(peers, None, router.home, nursery)  # type: ignore[arg-type]
    live = Live(router.home, sessions, broker, peers, nursery)
    return Node(discovery, here, router, peers, broker, publisher, relay, forwarding, live)
