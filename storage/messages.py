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
class Appended:
    """What one send stored: the sender's ack and each member's new inbox seq."""

    ack: dict[str, Any]
    message: Message
    inbox: dict[str, int]
    duplicate: bool


def get_message(txn: Txn, channel: str, msg_id: int) -> Message | None:
    raw = txn.get("messages", int_key(channel, msg_id))
    if raw is None:
        return None
    rec = unpack(raw)
    return Message(channel, msg_id, rec["from"], rec["body"], rec["ts"])


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


def read_inbox(txn: Txn, user_id: str, after: int, limit: int) -> list[InboxEntry]:
    """Inbox entries with seq > ``after``, ascending, at most ``limit``."""
    start, end = int_key(user_id, after + 1), prefix(user_id)
    out: list[InboxEntry] = []
    cursor = txn.cursor("inboxes")
    if not cursor.set_range(start):
        return out
    for key, value in cursor:
        if not key.startswith(end) or len(out) >= limit:
            break
        channel, msg_id = unpack(value)
        msg = get_message(txn, channel, msg_id)
        if msg is not None:
            out.append(InboxEntry(int_suffix(key), msg))
    return out


def read_inbox_page(txn: Txn, user_id: str, after: int, limit: int) -> InboxPage:
    """:func:`read_inbox` and the inbox head from the same transaction: an empty page's head
    is then exactly what a reader that got this page has seen (see docs/protocol.md "Sync")."""
    return InboxPage(read_inbox(txn, user_id, after, limit), txn.last_id("inboxes", user_id))


def read_channel(
    txn: Txn, channel: str, *, before: int | None, after: int | None, limit: int
) -> list[Message]:
    """A page of a channel, ascending by msg_id.

    With ``after``: the first ``limit`` messages above it. Otherwise the last ``limit`` messages
    below ``before`` (or the newest page).
    """
    pre = prefix(channel)
    cursor = txn.cursor("messages")
    rows: list[tuple[bytes, bytes]] = []
    if after is not None:
        if cursor.set_range(int_key(channel, after + 1)):
            for key, value in cursor:
                if not key.startswith(pre) or len(rows) >= limit:
                    break
                if before is not None and int_suffix(key) >= before:
                    break
                rows.append((key, value))
    else:
        seek = after_prefix(channel) if before is None else int_key(channel, before)
        ok = cursor.prev() if cursor.set_range(seek) else cursor.last()
        while ok and len(rows) < limit:
            key = cursor.key()
            if not key.startswith(pre):
                break
            rows.append((key, cursor.value()))
            ok = cursor.prev()
        rows.reverse()
    out = []
    for key, value in rows:
        rec = unpack(value)
        out.append(Message(channel, int_suffix(key), rec["from"], rec["body"], rec["ts"]))
    return out
