"""Online presence: per-user transitions, grace periods, fan-out to friends, queries.

A user is online while at least one device is connected and has been heard from within
``presence.timeout``; the transport finds silent devices and closes them (its heartbeat wheel,
``chatd/net/heartbeat.py``) and tells this module who connected and who left.

Transitions are per user, not per device: the first device in makes the user online; when the
last device disconnects the user stays online for ``presence.grace`` seconds, so a reconnect
within it announces nothing (no offline+online flap). A timeout means the user was already
silent for ``presence.timeout``: offline is announced at once. Each transition sends a
``presence`` frame to the online devices of the user's friends (state ``friends``) and stores
``last_active`` durably. Presence is for friends only: sharing a group shows nothing (anyone can
create a group around a stranger), in frames and in ``GET /v1/presence`` alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from chatd.domain.accounts import now_ms
from chatd.domain.errors import BadRequest, Forbidden
from chatd.domain.friends_tx import FRIENDS
from chatd.domain.ports import DeviceSink, Elsewhere, NoElsewhere, Shared
from chatd.domain.sessions import Sessions
from storage import Store

log = logging.getLogger("chatd.presence")
MAX_QUERY = 100


class Presence:
    def __init__(
        self,
        store: Store,
        sessions: Sessions,
        *,
        grace: float,
        draining: Callable[[], bool],
        elsewhere: Elsewhere | None = None,
        local: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.grace = grace
        self.draining = draining  # true once the server drains: nobody to tell any more
        #: friends homed on other shards (a cluster): their presence lives there
        self.elsewhere: Elsewhere = elsewhere or NoElsewhere()
        self.local = local or (lambda user_id: True)
        #: users whose last device left: (trio time their offline is due, last heard in ms)
        self._leaving: dict[str, tuple[float, int]] = {}

    # -- device events (from the transport)
    def connected(self, device: DeviceSink) -> None:
        """A device finished hello and is in the session table."""
        user = device.user_id
        if self._leaving.pop(user, None) is not None:
            return  # back within the grace period: no flap
        if self.sessions.count(user) == 1:
            self._transition(user, "online", now_ms())

    def disconnected(self, device: DeviceSink, *, timed_out: bool) -> None:
        """A device left the session table (for any reason)."""
        user = device.user_id
        if self.sessions.count(user) or user in self._leaving:
            return
        if self.draining():  # no one to tell; keep last_active for after the restart
            self._store_last_active(user, self._ms(device.heard_at))
        elif timed_out:
            self._transition(user, "offline", self._ms(device.heard_at))
        else:
            self._leaving[user] = (trio.current_time() + self.grace, self._ms(device.heard_at))

    def expire(self) -> None:
        """Announce the users whose grace period ran out (called on every heartbeat tick)."""
        now = trio.current_time()
        for user, (deadline, last_active) in list(self._leaving.items()):
            if deadline <= now:
                del self._leaving[user]
                self._transition(user, "offline", last_active)

    # -- state
    def _ms(self, heard_at: float) -> int:
        """A trio timestamp as wall-clock milliseconds."""
        return now_ms() - int((trio.current_time() - heard_at) * 1000)

    def _last_heard_ms(self, user: str) -> int:
        record = self.store.account(user) or {}
        return int(record.get("last_active") or 0)

    def status(self, user: str) -> dict[str, Any]:
        devices = self.sessions.devices(user)
        if devices:
            last = self._ms(max(d.heard_at for d in devices))
            return {"user_id": user, "status": "online", "last_active": last}
        if user in self._leaving:
            return {"user_id": user, "status": "online", "last_active": self._leaving[user][1]}
        return {
            "user_id": user,
            "status": "offline",
            "last_active": self._last_heard_ms(user) or None,
        }

    def _store_last_active(self, user: str, last_active: int) -> None:
        try:
            self.store.submit_update(user, {"last_active": last_active}, self._stored)
        except trio.WouldBlock:
            log.warning("last_active of %s not stored: commit queue full", user)

    def _transition(self, user: str, status: str, last_active: int) -> None:
        self._store_last_active(user, last_active)
        frame = Shared(
            {"type": "presence", "user_id": user, "status": status, "last_active": last_active}
        )
        friends = [friend for friend, state in self.store.friends(user) if state == FRIENDS]
        for friend in friends:
            for device in self.sessions.devices(friend):
                device.notify(frame)
        self.elsewhere.notify(friends, frame.frame)

    @staticmethod
    def _stored(_result: object, error: BaseException | None) -> None:
        if error is not None:
            log.warning("last_active not stored: %s", error)

    # -- queries
    def snapshot(self, device: DeviceSink) -> None:
        """One ``presence`` frame per friend, sent to a device that just connected."""
        remote = []
        for friend, state in self.store.friends(device.user_id):
            if state != FRIENDS:
                continue
            if self.local(friend):
                device.reply({"type": "presence", **self.status(friend)})
            else:
                remote.append(friend)
        if remote:
            self.elsewhere.snapshot(device, remote)

    async def query(self, user: str, targets: list[str]) -> list[dict[str, Any]]:
        """Presence of friends (state ``friends``) or oneself; Forbidden for anyone else.

        Sharing a group grants nothing: anyone may create a group around a stranger. An
        unknown user id is refused exactly like a stranger, so a query cannot probe accounts.
        """
        if not targets:
            raise BadRequest("give at least one user_id")
        if len(targets) > MAX_QUERY:
            raise BadRequest(f"at most {MAX_QUERY} user_ids per query")
        allowed = {user} | {f for f, s in self.store.friends(user) if s == FRIENDS}
        refused = sorted(set(targets) - allowed)
        if refused:
            raise Forbidden(f"not a friend: {', '.join(refused)}")
        remote = [t for t in dict.fromkeys(targets) if not self.local(t)]
        found = (
            dict(zip(remote, await self.elsewhere.statuses(remote), strict=True)) if remote else {}
        )
        return [found.get(t) or self.status(t) for t in targets]
