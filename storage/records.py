"""The typed records the repository reads and writes (frozen: a record read is a value).

Accounts, tokens and send acks stay plain dicts: their fields belong to the caller, and storage
keeps them as given. The encodings on disk are described in ``storage/env.py``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    channel: str
    msg_id: int
    sender: str
    body: str
    ts: int


@dataclass(frozen=True, slots=True)
class InboxEntry:
    seq: int
    message: Message


@dataclass(frozen=True, slots=True)
class InboxPage:
    """Inbox entries after a cursor and the inbox head, read in one snapshot."""

    entries: list[InboxEntry]
    head: int


@dataclass(frozen=True, slots=True)
class ChannelPage:
    """A page of a channel, ascending, and whether more messages lie beyond it in the
    direction of paging (older for a page read backwards, newer for one read forwards)."""

    messages: list[Message]
    more: bool


@dataclass(frozen=True, slots=True)
class Group:
    """A group channel's record; ``members`` in the order they joined."""

    name: str
    owner: str
    members: tuple[str, ...]
    created_at: int


@dataclass(frozen=True, slots=True)
class Membership:
    """A user's membership of a channel (group or 1:1) and their read mark in it."""

    read: int


@dataclass(frozen=True, slots=True)
class ChannelState:
    """One row of a user's channel list (``last_ts`` is 0 while the channel has no message)."""

    channel: str
    read_msg_id: int
    last_msg_id: int
    last_ts: int
