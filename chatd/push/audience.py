"""Who a message may push to, and which messages a user's devices received.

**The snapshot rule.** Whether a recipient has a device online is decided inside the send's
commit, in the storage writer thread, which must not read the loop's mutable session table.
So the loop keeps the facts (each user's subscription ids, the users with a device online)
and, on every change, publishes a new immutable map ``offline``: user -> subscription ids,
holding exactly the users that have subscriptions and no device online. The writer reads the
``offline`` attribute once per message (one reference read: the map itself never changes) and
stores a job per subscription of each recipient in it. An ``immutables.Map`` (a HAMT) makes a
change O(log n), so a reconnect storm costs no copy of the whole table.

Changes come from the session table (a user's first device in, last device out: see
:class:`WatchedSessions`) and from subscription commits, in commit order. A user who comes
online between the snapshot and the message's delivery gets the job anyway; the worker drops
it as moot once a device received the message (:class:`Deliveries`). A user whose last device
leaves in that window gets no notification: the message waits in the inbox for the next sync.

**Moot.** The transport reports each ``msg`` frame it writes to a device (live or replayed)
as ``delivered(user, seq)``; :class:`Deliveries` keeps the highest inbox seq per user. A job
whose inbox seq is at most that was received by a device, so it is dropped, not sent.
"""

from __future__ import annotations

from collections.abc import Iterable

import immutables

from chatd.domain.ports import DeviceSink
from chatd.domain.sessions import Sessions


class Audience:
    """Loop-owned facts about subscriptions and online users, and the writer's snapshot."""

    def __init__(self) -> None:
        self._subs: dict[str, tuple[str, ...]] = {}
        self._online: set[str] = set()
        #: Users with subscriptions and no device online -> their subscription ids. Replaced,
        #: never changed: the writer thread reads it (see the module's snapshot rule).
        self.offline: immutables.Map[str, tuple[str, ...]] = immutables.Map()

    def load(self, keys: Iterable[tuple[str, str]]) -> None:
        """Every (user, subscription id) stored, at start-up (no device is online yet)."""
        subs: dict[str, list[str]] = {}
        for user, sub_id in keys:
            subs.setdefault(user, []).append(sub_id)
        self._subs = {user: tuple(ids) for user, ids in subs.items()}
        self._publish_all()

    def subs(self, user: str) -> tuple[str, ...]:
        return self._subs.get(user, ())

    def online(self) -> set[str]:
        """The users with a device online (the loop's own set: do not change it)."""
        return self._online

    def subscribed(self, user: str, sub_id: str) -> None:
        """A subscription was committed."""
        ids = self._subs.get(user, ())
        if sub_id not in ids:
            self._subs[user] = (*ids, sub_id)
            self._publish(user)

    def unsubscribed(self, user: str, sub_id: str) -> None:
        """A subscription was deleted (by its user, or because its provider said it is gone)."""
        ids = tuple(i for i in self._subs.get(user, ()) if i != sub_id)
        if ids:
            self._subs[user] = ids
        else:
            self._subs.pop(user, None)
        self._publish(user)

    def came_online(self, user: str) -> None:
        self._online.add(user)
        self._publish(user)

    def went_offline(self, user: str) -> None:
        self._online.discard(user)
        self._publish(user)

    def _publish(self, user: str) -> None:
        ids = self._subs.get(user)
        if ids and user not in self._online:
            if self.offline.get(user) != ids:
                self.offline = self.offline.set(user, ids)
        elif user in self.offline:
            self.offline = self.offline.delete(user)

    def _publish_all(self) -> None:
        self.offline = immutables.Map(
            {u: ids for u, ids in self._subs.items() if u not in self._online}
        )


class WatchedSessions(Sessions):
    """The session table, telling the audience when a user's first device comes and its last
    one goes (the only changes the snapshot needs)."""

    def __init__(self, audience: Audience) -> None:
        super().__init__()
        self._audience = audience

    def add(self, device: DeviceSink) -> None:
        first = self.count(device.user_id) == 0
        super().add(device)
        if first:
            self._audience.came_online(device.user_id)

    def remove(self, device: DeviceSink) -> None:
        before = self.count(device.user_id)
        super().remove(device)
        if before and self.count(device.user_id) == 0:
            self._audience.went_offline(device.user_id)


class Deliveries:
    """The highest inbox seq written to any device of each user (the transport's ack)."""

    __slots__ = ("highest",)

    def __init__(self) -> None:
        self.highest: dict[str, int] = {}

    def delivered(self, user: str, seq: int) -> None:
        """A ``msg`` frame for inbox ``seq`` was written to a device of ``user``."""
        if seq > self.highest.get(user, 0):
            self.highest[user] = seq

    def received(self, user: str, seq: int) -> bool:
        return self.highest.get(user, 0) >= seq

    def forget(self, keep: Iterable[str]) -> None:
        """Drop what no pending job needs (users not in ``keep``): memory stays bounded."""
        wanted = set(keep)
        self.highest = {u: s for u, s in self.highest.items() if u in wanted}
