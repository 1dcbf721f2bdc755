"""Ports: the small interfaces the domain talks to; other layers implement them.

- :class:`DeviceSink` is one online device as the domain sees it. The WebSocket shell
  (``chatd/net/websocket.py``) implements it; domain tests use a fake.
- :class:`Router` says where a user or a channel lives. In one process everything is local
  (:class:`LocalRouter`); the cluster implements it from the discovery file.
- :class:`Relay` is the cross-shard half of a send's commit, and :class:`Remote` the part of
  a send that waits on another shard; the cluster (``chatd/cluster/``) implements both.
- :class:`OutboxHook` lets a feature add records to the commit transaction of a message. The
  records stay in storage's ``outbox`` until that feature's consumer deletes them, so a crash
  between the commit and the feature's work loses nothing: push notifications and cross-shard
  delivery plug in here without touching the send path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chatd.domain.errors import ChatError
from storage import Group, Message, WriteTx


class Shared:
    """A server frame handed to many devices. The domain builds it once; each transport keeps
    its encodings (one per wire format) in ``cache``, so fan-out encodes at most once each."""

    __slots__ = ("frame", "cache")

    def __init__(self, frame: dict[str, Any]) -> None:
        self.frame = frame
        self.cache: dict[Any, Any] | None = None  # made by the first transport to encode


class DeviceSink(Protocol):
    """One authenticated, online device."""

    @property
    def user_id(self) -> str: ...

    @property
    def token_digest(self) -> bytes:
        """SHA-256 of the token the device authenticated with (logout signs it out)."""
        ...

    @property
    def heard_at(self) -> float:
        """When the device was last heard from (trio time): presence's ``last_active``."""
        ...

    def deliver(self, seq: int, frame: Shared) -> None:
        """Inbox entry ``seq`` as a ``msg`` frame; the sink drops what the device already has
        (or will get from its replay). ``frame`` holds the message's fields (``channel``,
        ``msg_id``, ``from``, ``body``, ``ts``: the same object for every member); the sink
        sends them as ``{"type": "msg", "inbox": seq, ...}``."""

    def notify(self, frame: Shared) -> None:
        """A signal for this device: presence, a read mark, typing."""

    def reply(self, frame: dict[str, Any]) -> None:
        """An answer to this device's own request (history, pong, presence snapshot)."""

    def finished(self, answer: dict[str, Any] | ChatError | None) -> None:
        """One of this device's requests in flight (a ``send`` or a ``read``) is done, with its
        answer: an ``ack`` frame, an error (the transport turns it into an ``error`` frame), or
        None when it has none. Exactly one call for each request the domain accepted without
        raising."""

    def end(self, code: str, message: str) -> None:
        """Close the device with domain error ``code`` (``unauthorized``, ...): the transport
        sends the error and picks the close code."""


@dataclass(frozen=True, slots=True)
class Place:
    """Where something lives: this process, or another shard (by name, and its public URL)."""

    local: bool
    shard: str = ""
    url: str = ""


class Router(Protocol):
    def home(self, user_id: str) -> Place:
        """The shard that holds a user's account, inbox and sessions."""
        ...

    def sequencer(self, channel: str) -> Place:
        """The shard that assigns a channel's msg_ids and keeps its history."""
        ...


class LocalRouter:
    """One process holds every user and channel."""

    HERE = Place(local=True)

    def home(self, user_id: str) -> Place:
        return self.HERE

    def sequencer(self, channel: str) -> Place:
        return self.HERE


class OutboxHook(Protocol):
    """A feature that stores work to do about a message in the message's own transaction."""

    @property
    def topic(self) -> str: ...

    def records(
        self, channel: str, msg_id: int, sender: str, inbox: Mapping[str, int]
    ) -> Sequence[bytes]:
        """Records (opaque bytes) to append to this hook's topic with the message; runs inside
        the commit, in the writer thread: no I/O, no awaiting, no shared mutable state."""
        ...


class Relay(Protocol):
    """Members homed on other shards get a message through records stored in its commit."""

    def split(self, members: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
        """(members homed here, {other shard: its members})."""
        ...

    def write(
        self, tx: WriteTx, message: Message, remote: Mapping[str, Sequence[str]], ref: str
    ) -> dict[str, bytes]:
        """Store one record per shard of ``remote`` in ``tx`` (the message's own commit, in
        the writer thread); the records by shard."""
        ...

    def committed(self) -> None:
        """A commit stored records: send them soon."""

    def friend(self, tx: WriteTx, owner: str, other: str, state: str | None) -> bool:
        """If ``owner`` is homed on another shard, store a record in ``tx`` that sets (None:
        deletes) ``owner``'s friendship row about ``other`` there, and return True."""
        ...

    def group(self, tx: WriteTx, channel: str, group: Group, users: Sequence[str]) -> None:
        """Store records in ``tx`` that bring each shard homing some of ``users`` (members
        before or after a change) the group's new record."""


class Remote(Protocol):
    """Sends that need another shard before they can commit."""

    def knows(self, user_id: str) -> bool:
        """Whether ``user_id`` (homed on another shard) is known to exist."""
        ...

    def resolve(self, device: DeviceSink, ref: str, body: str, to: str) -> None:
        """Find out whether ``to`` exists, then send again (or answer ``not_found``)."""

    def forward(self, device: DeviceSink, ref: str, channel: str, body: str, to: Place) -> None:
        """Commit on the channel's sequencer shard ``to``; ``device.finished`` exactly once."""

    def history(
        self, device: DeviceSink, ref: str, channel: str, args: dict[str, Any], to: Place
    ) -> None:
        """Ask the channel's sequencer shard ``to`` for a page (``args``: before, limit) and
        reply the ``history`` frame, or an error frame, to ``device``."""


class Elsewhere(Protocol):
    """Users homed on other shards, for signals that are not stored (presence, read and
    typing notices): the cluster implements it over Redis pub/sub."""

    def notify(self, users: Iterable[str], frame: dict[str, Any]) -> None:
        """Hand ``frame`` to the online devices of those of ``users`` homed on other shards
        (users homed here are skipped). Best effort: lost if the broker is down."""

    async def statuses(self, users: Sequence[str]) -> list[dict[str, Any]]:
        """The presence (``{user_id, status, last_active}``) of users homed elsewhere, from
        their home shards, in order."""
        ...

    def snapshot(self, device: DeviceSink, users: Sequence[str]) -> None:
        """Reply to ``device`` one ``presence`` frame per user (homed elsewhere), soon."""


class NoElsewhere:
    """One process: every user is homed here."""

    def notify(self, users: Iterable[str], frame: dict[str, Any]) -> None:
        return None

    async def statuses(self, users: Sequence[str]) -> list[dict[str, Any]]:
        raise AssertionError("no user is homed elsewhere")

    def snapshot(self, device: DeviceSink, users: Sequence[str]) -> None:
        raise AssertionError("no user is homed elsewhere")
