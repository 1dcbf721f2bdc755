"""Transaction functions for channels, messages, per-user inboxes and send refs.

A channel's last msg_id and a user's inbox head are not stored separately: each is the last key
under its prefix, found with one cursor step, so there is no counter to keep in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage import groups
from storage.codec import after_prefix, int_key, int_suffix, pack, prefix, str_key, unpack
from storage.env import Txn


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
class Appended:
    """What one send stored: the sender's ack and each member's new inbox seq."""

    ack: dict[str, Any]
    message: Message
    inbox: dict[str, int]
    duplicate: bool


def get_message(txn: Txn, channel: str, msg_id: int) -> Message | None:
    raw = txn.get("messages", int_key(channel, msg_id))
    return None if raw is None else _message(channel, msg_id, raw)


def _message(channel: str, msg_id: int, raw: bytes) -> Message:
    rec = unpack(raw)
    return Message(channel, msg_id, rec["from"], rec["body"], rec["ts"])


def _fits(total: int, size: int, max_bytes: int | None, rows: int) -> bool:
    """The byte budget of a page: its first row always fits, later ones while the stored
    records add up to at most ``max_bytes`` (None: no budget)."""
    return max_bytes is None or rows == 0 or total + size <= max_bytes


def last_message(txn: Txn, channel: str) -> Message | None:
    msg_id = txn.last_id("messages", channel)
    return get_message(txn, channel, msg_id) if msg_id else None


def get_ref(txn: Txn, user_id: str, ref: str) -> dict[str, Any] | None:
    raw = txn.get("refs", str_key(user_id, ref))
    return None if raw is None else unpack(raw)


def append_message(
    txn: Txn,
    *,
    sender: str,
    ref: str,
    channel: str,
    members: list[str] | None,
    body: str,
    ts: int,
) -> Appended:
    """Store one message and an inbox entry for every member, or replay the ack for ``ref``.

    ``members=None`` means a group: its members are read (and the sender's membership checked)
    inside this transaction, so a concurrent add or remove is either wholly before or after.
    The sender's read mark moves to the new message.
    """
    ack = get_ref(txn, sender, ref)
    if ack is not None:
        msg = get_message(txn, ack["channel"], ack["msg_id"])
        assert msg is not None
        return Appended(ack, msg, {}, duplicate=True)
    if members is None:
        members = groups.group_members(txn, channel, sender)
    elif txn.last_id("messages", channel) == 0:  # a 1:1 channel's first message: join both
        for user in members:
            groups.join(txn, user, channel)
    msg_id = txn.claim_id("messages", channel)
    txn.put("messages", int_key(channel, msg_id), pack({"from": sender, "body": body, "ts": ts}))
    inbox = {}
    for user in members:
        seq = txn.claim_id("inboxes", user)
        txn.put("inboxes", int_key(user, seq), pack([channel, msg_id]))
        inbox[user] = seq
    groups.mark_read(txn, sender, channel, msg_id)
    groups.set_last(txn, channel, msg_id, ts)
    ack = {"channel": channel, "msg_id": msg_id, "ts": ts, "inbox": inbox[sender]}
    txn.put("refs", str_key(sender, ref), pack(ack))
    return Appended(ack, Message(channel, msg_id, sender, body, ts), inbox, duplicate=False)


def read_inbox(
    txn: Txn, user_id: str, after: int, limit: int, max_bytes: int | None = None
) -> list[InboxEntry]:
    """Inbox entries with seq > ``after``, ascending, at most ``limit``; past the first, at
    most ``max_bytes`` of stored message records."""
    start, end = int_key(user_id, after + 1), prefix(user_id)
    out: list[InboxEntry] = []
    total = 0
    cursor = txn.cursor("inboxes")
    if not cursor.set_range(start):
        return out
    for key, value in cursor:
        if not key.startswith(end) or len(out) >= limit:
            break
        channel, msg_id = unpack(value)
        raw = txn.get("messages", int_key(channel, msg_id))
        if raw is None:
            continue
        if not _fits(total, len(raw), max_bytes, len(out)):
            break
        total += len(raw)
        out.append(InboxEntry(int_suffix(key), _message(channel, msg_id, raw)))
    return out


def read_inbox_page(
    txn: Txn, user_id: str, after: int, limit: int, max_bytes: int | None = None
) -> InboxPage:
    """:func:`read_inbox` and the inbox head from the same transaction: an empty page's head
    is then exactly what a reader that got this page has seen (see docs/protocol.md "Sync")."""
    entries = read_inbox(txn, user_id, after, limit, max_bytes)
    return InboxPage(entries, txn.last_id("inboxes", user_id))


def read_channel(
    txn: Txn, channel: str, *, before: int | None, after: int | None, limit: int
) -> list[Message]:
    """The messages of :func:`read_channel_page`, with no byte budget."""
    return read_channel_page(txn, channel, before=before, after=after, limit=limit).messages


def read_channel_page(
    txn: Txn,
    channel: str,
    *,
    before: int | None,
    after: int | None,
    limit: int,
    max_bytes: int | None = None,
) -> ChannelPage:
    """A page of a channel, ascending by msg_id.

    With ``after``: the first ``limit`` messages above it (and below ``before``, if given).
    Otherwise the last ``limit`` messages below ``before`` (or the newest page). Past its first
    message the page holds at most ``max_bytes`` of stored records, so a budget cuts it on the
    side away from the cursor. ``more``: the walk stopped with a message of the channel (in
    range) still ahead of it, seen with one more cursor step.
    """
    pre = prefix(channel)
    cursor = txn.cursor("messages")
    forward = after is not None
    stop = before if forward else None  # a forward walk also ends at ``before``
    if after is not None:
        ok = cursor.set_range(int_key(channel, after + 1))
    else:
        seek = after_prefix(channel) if before is None else int_key(channel, before)
        ok = cursor.prev() if cursor.set_range(seek) else cursor.last()
    rows: list[tuple[bytes, bytes]] = []
    total, more = 0, False
    while ok:
        key = cursor.key()
        if not key.startswith(pre) or (stop is not None and int_suffix(key) >= stop):
            break
        value = cursor.value()
        if len(rows) >= limit or not _fits(total, len(value), max_bytes, len(rows)):
            more = True
            break
        rows.append((key, value))
        total += len(value)
        ok = cursor.next() if forward else cursor.prev()
    if not forward:
        rows.reverse()
    return ChannelPage([_message(channel, int_suffix(k), v) for k, v in rows], more)
