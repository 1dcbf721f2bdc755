"""Signals between shards that are not stored: presence, read and typing notices.

:class:`Live` implements the domain's ``Elsewhere`` port. ``notify`` queues a frame for the
users homed on other shards; a task publishes what is queued, one Redis PUBLISH per shard per
wake-up (``["n", [[users, frame], ...]]`` on the shard's live channel), and the receiving
shard hands each frame to those users' online devices (:meth:`Live.on_live`). A notice sent
while Redis is down is lost, as the contract allows for signals that are not stored. Presence
of users homed elsewhere (the snapshot at hello, ``GET /v1/presence``) is asked of their home
shards over the peer listener.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import trio

from chatd.cluster import wire
from chatd.cluster.peer import PeerDown, Peers
from chatd.domain.errors import Unavailable
from chatd.domain.ports import DeviceSink, Place, Shared
from chatd.domain.sessions import Sessions

log = logging.getLogger("chatd.cluster")
MAX_QUEUED = 10_000  # notices waiting per shard; past it new ones are dropped


class Announcer(Protocol):
    async def announce(self, dest_shard: str, payload: bytes) -> bool: ...


class Live:
    def __init__(
        self,
        home: Callable[[str], Place],
        sessions: Sessions,
        broker: Announcer,
        peers: Peers,
        nursery: trio.Nursery,
    ) -> None:
        self.home = home
        self.sessions = sessions
        self.broker = broker
        self.peers = peers
        self.nursery = nursery
        self.queued: dict[str, list[list[Any]]] = {}
        self.dropped = 0
        self._wake = trio.Event()

    # -- the Elsewhere port
    def notify(self, users: Iterable[str], frame: dict[str, Any]) -> None:
        by_shard: dict[str, list[str]] = {}
        for user in users:
            place = self.home(user)
            if not place.local:
                by_shard.setdefault(place.shard, []).append(user)
        for shard, targets in by_shard.items():
            queue = self.queued.setdefault(shard, [])
            if len(queue) >= MAX_QUEUED:
                self.dropped += 1
                continue
            queue.append([targets, frame])
            self._wake.set()

    async def statuses(self, users: Sequence[str]) -> list[dict[str, Any]]:
        by_shard: dict[str, list[str]] = {}
        for user in users:
            by_shard.setdefault(self.home(user).shard, []).append(user)
        found: dict[str, dict[str, Any]] = {}
        for shard, targets in by_shard.items():
            query = "&".join(f"user_id={u}" for u in targets)
            try:
                answer = await self.peers.request(shard, "GET", f"/peer/presence?{query}")
            except PeerDown as exc:
                raise Unavailable(str(exc), retry_after=1.0) from None
            if answer.status != 200:
                raise Unavailable(f"shard {shard} answered {answer.status}", retry_after=1.0)
            for row in answer.json()["presence"]:
                found[row["user_id"]] = row
        return [found[u] for u in users]

    def snapshot(self, device: DeviceSink, users: Sequence[str]) -> None:
        self.nursery.start_soon(self._snapshot, device, list(users))

    async def _snapshot(self, device: DeviceSink, users: list[str]) -> None:
        try:
            rows = await self.statuses(users)
        except Unavailable as exc:
            log.info("presence snapshot for %s incomplete: %s", device.user_id, exc)
            return
        for row in rows:
            device.reply({"type": "presence", **row})

    # -- the two directions over Redis
    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            queued, self.queued = self.queued, {}
            for shard, items in queued.items():
                if not await self.broker.announce(shard, wire.pack(["n", items])):
                    self.dropped += len(items)

    def on_live(self, payload: bytes) -> None:
        try:
            kind, items = wire.unpack(payload)
            if kind != "n":
                raise ValueError(f"unknown live kind {kind!r}")
            for users, frame in items:
                shared = Shared(frame)
                for user in users:
                    for device in self.sessions.devices(user):
                        device.notify(shared)
        except (ValueError, TypeError) as exc:
            log.error("dropping a live message: %s", exc)
