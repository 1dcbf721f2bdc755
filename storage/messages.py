"""Messages, inboxes and send refs: their compact encodings (format 2), typed record
operations and the paging reads.

Every stored message costs one item in ``messages``, one 16-byte item per member in
``inboxes`` and one item in ``refs`` (until the ref's window ends, ``storage/retention.py``).
Items of one key (a channel, a user) are an LMDB dupsort set: a B-tree of their own, appended
in order, so its pages fill up; no field is stored twice (the key holds the channel or user).

``messages``: channel -> ``ordered(msg_id) | ts (6 bytes) | who (1 byte) [| len | sender] |
body``, sorted by msg_id. ``who``: 0 or 1, the sender is the first or second user of the
``dm:<a>:<b>`` id; 2, the sender's id follows (1 byte length, UTF-8). With the ``SPILLED``
bit the body is not in the item (an item is at most 511 bytes, LMDB's key size) but in
``bodies`` under channel \0 msg_id (8 bytes, big-endian).

``inboxes``: user -> ``ordered(seq) | ordered(channel number) | ordered(msg_id)`` (about 10
bytes); the channel number is the channel's in ``chanids`` / ``channames`` (given at its first
inbox entry or ref). ``ordered`` is the order-preserving varint of ``storage/codec.py``. (Not
``MDB_DUPFIXED``: LMDB 0.9's compacting copy, ``chatd backup`` and ``chatd compact``, crashes
on a dupfixed sub-database of more than one page.)

``refs``: user -> ``len (2) | ref (UTF-8) | ordered(channel number) | ordered(msg_id) |
ordered(inbox seq, 0: none)``, sorted by (length, ref): the ack of that send, rebuilt on read
(its ts is the message's). ``ordered`` is the order-preserving varint of ``storage/codec.py``.

A channel's last msg_id and a user's inbox head are not stored separately: each is the last
item of its key (cached by the writer, see ``storage/env.py``), so there is no counter to keep
in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from storage.codec import from_ordered, from_u48, int_key, ordered, u48
from storage.env import Txn
from storage.records import ChannelPage, InboxEntry, InboxPage, Message

#: The ``who`` byte's flag: the body is in ``bodies``.
SPILLED = 0x80
#: LMDB's largest key, so the largest dupsort item.
MAX_ITEM = 511


def dm_users(channel: str) -> tuple[str, str] | None:
    """The two users of a ``dm:<a>:<b>`` id (storage's view: no validation of the names)."""
    if not channel.startswith("dm:"):
        return None
    a, sep, b = channel[3:].partition(":")
    return (a, b) if sep else None


def message_item(message: Message) -> tuple[bytes, bytes | None]:
    """(the ``messages`` item, the body to put in ``bodies`` or None)."""
    users = dm_users(message.channel)
    head = ordered(message.msg_id) + u48(message.ts)
    if users is not None and message.sender == users[0]:
        who = b"\x00"
    elif users is not None and message.sender == users[1]:
        who = b"\x01"
    else:
        sender = message.sender.encode()
        who = b"\x02" + bytes((len(sender),)) + sender
    body = message.body.encode()
    if len(head) + len(who) + len(body) <= MAX_ITEM:
        return head + who + body, None
    return head + bytes((who[0] | SPILLED,)) + who[1:], body


def item_msg_id(item: bytes) -> int:
    return from_ordered(item)[0]


def parse_message(txn: Txn, channel: str, item: bytes) -> Message:
    msg_id, at = from_ordered(item)
    ts = from_u48(item, at)
    who = item[at + 6]
    at += 7
    kind = who & 0x7F
    if kind == 2:
        end = at + 1 + item[at]
        sender = item[at + 1 : end].decode()
        at = end
    else:
        users = dm_users(channel)
        assert users is not None, f"a dm sender code in {channel!r}"
        sender = users[kind]
    if who & SPILLED:
        raw = txn.get("bodies", int_key(channel, msg_id))
        body = raw.decode() if raw is not None else ""
    else:
        body = item[at:].decode()
    return Message(channel, msg_id, sender, body, ts)


def item_size(txn: Txn, channel: str, item: bytes) -> int:
    """The stored bytes of a message (its item, and its spilled body): a page's budget."""
    if item[item[0] + 7] & SPILLED:
        raw = txn.get("bodies", int_key(channel, item_msg_id(item)))
        return len(item) + (len(raw) if raw is not None else 0)
    return len(item)


def inbox_item(seq: int, number: int, msg_id: int) -> bytes:
    return ordered(seq) + ordered(number) + ordered(msg_id)


def parse_inbox(item: bytes) -> tuple[int, int, int]:
    """(seq, channel number, msg_id) of an inbox item."""
    seq, at = from_ordered(item)
    number, at = from_ordered(item, at)
    return seq, number, from_ordered(item, at)[0]


def ref_prefix(ref: str) -> bytes:
    raw = ref.encode()
    return len(raw).to_bytes(2, "big") + raw


def ref_item(ref: str, number: int, ack: dict[str, Any]) -> bytes:
    """The ack's ts is its message's: read from there, not stored twice."""
    return ref_prefix(ref) + ordered(number) + ordered(ack["msg_id"]) + ordered(ack.get("inbox", 0))


def parse_ref(item: bytes) -> tuple[str, int, int, int]:
    """(ref, channel number, msg_id, inbox seq or 0) of a ``refs`` item."""
    end = 2 + int.from_bytes(item[:2], "big")
    number, at = from_ordered(item, end)
    msg_id, at = from_ordered(item, at)
    inbox, _ = from_ordered(item, at)
    return item[2:end].decode(), number, msg_id, inbox


def message_ts(txn: Txn, channel: str, msg_id: int) -> int | None:
    """The ts of a stored message (None: no such message, e.g. purged by retention)."""
    cursor = find_message(txn, channel, msg_id)
    if cursor is None:
        return None
    item = cursor.value()
    return from_u48(item, item[0] + 1)


def ref_ts(txn: Txn, item: bytes) -> int | None:
    """The ts of a ``refs`` item's message (what the retention sweep reads); None if the
    message is gone."""
    _, number, msg_id, _ = parse_ref(item)
    return message_ts(txn, channel_name(txn, number), msg_id)


def channel_name(txn: Txn, number: int) -> str:
    raw = txn.get("channames", number.to_bytes(4, "big"))
    if raw is None:
        raise KeyError(f"no channel number {number}")
    return raw.decode()


def intern(txn: Txn, channel: str) -> int:
    """``channel``'s number in ``txn``'s environment, given one if it has none, with no
    writer's cache: for offline tools (a re-shard, the format upgrade). The server's writer
    uses ``Txn.channel_number``."""
    raw = txn.get("chanids", channel.encode())
    if raw is not None:
        return int.from_bytes(raw, "big")
    cursor = txn.cursor("channames")
    number = int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 1
    packed = number.to_bytes(4, "big")
    txn.put("chanids", channel.encode(), packed)
    txn.put("channames", packed, channel.encode())
    return number


def find_message(txn: Txn, channel: str, msg_id: int, *, write: bool = False) -> Any:
    """A ``messages`` cursor on ``channel``'s item of ``msg_id`` (one that may delete it if
    ``write``), or None."""
    cursor = txn.write_cursor("messages") if write else txn.cursor("messages")
    if cursor.set_range_dup(channel.encode(), ordered(msg_id)) and (
        item_msg_id(cursor.value()) == msg_id
    ):
        return cursor
    return None


def channel_items(txn: Txn, channel: str) -> Iterator[bytes]:
    """Every item of ``channel``, by msg_id."""
    cursor = txn.cursor("messages")
    if cursor.set_key(channel.encode()):
        yield from cursor.iternext_dup()


def _fits(total: int, size: int, max_bytes: int | None, rows: int) -> bool:
    """The byte budget of a page: its first row always fits, later ones while the stored
    records add up to at most ``max_bytes`` (None: no budget)."""
    return max_bytes is None or rows == 0 or total + size <= max_bytes


class MessageReads:
    __slots__ = ()
    txn: Txn

    def message_get(self, channel: str, msg_id: int) -> Message | None:
        cursor = find_message(self.txn, channel, msg_id)
        return None if cursor is None else parse_message(self.txn, channel, cursor.value())

    def last_msg_id(self, channel: str) -> int:
        """The highest msg_id of ``channel`` (0 if none), counting ids claimed in this write."""
        return self.txn.last_id("messages", channel)

    def inbox_head(self, user_id: str) -> int:
        """The highest inbox seq of ``user_id`` (0 if none)."""
        return self.txn.last_id("inboxes", user_id)

    def ref_get(self, user_id: str, ref: str) -> dict[str, Any] | None:
        """The ack of ``user_id``'s send ``ref``: ``{channel, msg_id, ts[, inbox]}``."""
        cursor = self.txn.cursor("refs")
        want = ref_prefix(ref)
        if not cursor.set_range_dup(user_id.encode(), want) or not cursor.value().startswith(want):
            return None
        _, number, msg_id, inbox = parse_ref(cursor.value())
        channel = channel_name(self.txn, number)
        ts = message_ts(self.txn, channel, msg_id)
        if ts is None:  # its message is gone (history retention): the ref is spent
            return None
        ack: dict[str, Any] = {"channel": channel, "msg_id": msg_id, "ts": ts}
        if inbox:
            ack["inbox"] = inbox
        return ack

    def inbox(
        self, user_id: str, after: int, limit: int, max_bytes: int | None = None
    ) -> list[InboxEntry]:
        """Inbox entries with seq > ``after``, ascending, at most ``limit``; past the first, at
        most ``max_bytes`` of stored message records. An entry whose message is gone (purged
        by history retention) is skipped."""
        txn = self.txn
        out: list[InboxEntry] = []
        if limit <= 0:
            return out
        total = 0
        cursor = txn.cursor("inboxes")
        if not cursor.set_range_dup(user_id.encode(), ordered(max(after + 1, 0))):
            return out
        names: dict[int, str] = {}
        messages = txn.cursor("messages")
        for item in cursor.iternext_dup():
            if len(out) >= limit:
                break
            seq, number, msg_id = parse_inbox(item)
            channel = names.get(number)
            if channel is None:
                channel = names[number] = channel_name(txn, number)
            if not (
                messages.set_range_dup(channel.encode(), ordered(msg_id))
                and item_msg_id(messages.value()) == msg_id
            ):
                continue
            raw = messages.value()
            size = item_size(txn, channel, raw)
            if not _fits(total, size, max_bytes, len(out)):
                break
            total += size
            out.append(InboxEntry(seq, parse_message(txn, channel, raw)))
        return out

    def inbox_oldest(self, user_id: str) -> int:
        """The lowest inbox seq ``user_id`` still has (0 if none)."""
        cursor = self.txn.cursor("inboxes")
        return from_ordered(cursor.value())[0] if cursor.set_key(user_id.encode()) else 0

    def inbox_page(
        self, user_id: str, after: int, limit: int, max_bytes: int | None = None
    ) -> InboxPage:
        """:meth:`inbox` and the inbox head from the same transaction: an empty page's head
        is then exactly what a reader that got this page has seen (see docs/protocol.md
        "Sync")."""
        entries = self.inbox(user_id, after, limit, max_bytes)
        return InboxPage(entries, self.inbox_head(user_id))

    def channel_page(
        self,
        channel: str,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
        max_bytes: int | None = None,
    ) -> ChannelPage:
        """A page of a channel, ascending by msg_id.

        With ``after``: the first ``limit`` messages above it (and below ``before``, if given).
        Otherwise the last ``limit`` messages below ``before`` (or the newest page). Past its
        first message the page holds at most ``max_bytes`` of stored records, so a budget cuts
        it on the side away from the cursor. ``more``: the walk stopped with a message of the
        channel (in range) still ahead of it, seen with one more cursor step.
        """
        txn = self.txn
        key = channel.encode()
        cursor = txn.cursor("messages")
        forward = after is not None
        stop = before if forward else None  # a forward walk also ends at ``before``
        if after is not None:
            ok = cursor.set_range_dup(key, ordered(max(after + 1, 0)))
        elif before is None:
            ok = cursor.set_key(key) and cursor.last_dup()
        elif cursor.set_range_dup(key, ordered(max(before, 0))):
            ok = cursor.prev_dup()
        else:
            ok = cursor.set_key(key) and cursor.last_dup()
        rows: list[bytes] = []
        total, more = 0, False
        while ok:
            value = cursor.value()
            if stop is not None and item_msg_id(value) >= stop:
                break
            size = item_size(txn, channel, value)
            if len(rows) >= limit or not _fits(total, size, max_bytes, len(rows)):
                more = True
                break
            rows.append(value)
            total += size
            ok = cursor.next_dup() if forward else cursor.prev_dup()
        if not forward:
            rows.reverse()
        return ChannelPage([parse_message(txn, channel, v) for v in rows], more)


class MessageWrites:
    __slots__ = ()
    txn: Txn

    def next_msg_id(self, channel: str) -> int:
        """Claim ``channel``'s next msg_id (undone if this op or its batch fails)."""
        return self.txn.claim_id("messages", channel)

    def message_put(self, message: Message) -> None:
        """Store ``message`` (its msg_id new in its channel: the caller claimed or checked it)."""
        item, spilled = message_item(message)
        key = message.channel.encode()
        # Appended at the end of the channel's items (MDB_APPENDDUP): a full page is then
        # split with the new item alone on the new page, so pages stay full, not half full.
        # An older msg_id (a replica filling in) is not last: then a sorted put.
        txn = self.txn
        if not txn.raw_writes().put(key, item, db=txn.handle("messages"), append=True):
            txn.put("messages", key, item)
        if spilled is not None:
            txn.put("bodies", int_key(message.channel, message.msg_id), spilled)

    def message_delete(self, channel: str, msg_id: int) -> bool:
        cursor = find_message(self.txn, channel, msg_id, write=True)
        if cursor is None:
            return False
        cursor.delete()
        self.txn.delete("bodies", int_key(channel, msg_id))
        return True

    def inbox_append(self, user_id: str, channel: str, msg_id: int) -> int:
        """Append an entry for message (``channel``, ``msg_id``) to the user's inbox; its seq."""
        return self.inbox_append_many((user_id,), channel, msg_id)[user_id]

    def inbox_append_many(self, users: Iterable[str], channel: str, msg_id: int) -> dict[str, int]:
        """:meth:`inbox_append` for each of ``users`` in turn: {user: the entry's seq}.

        One call per message instead of one per member (the channel's number looked up
        once): this is the hot loop of every send."""
        txn = self.txn
        claim, put, db = txn.claim_id, txn.raw_writes().put, txn.handle("inboxes")
        tail = ordered(txn.channel_number(channel)) + ordered(msg_id)
        out: dict[str, int] = {}
        for user in users:
            seq = out[user] = claim("inboxes", user)
            put(
                user.encode(), ordered(seq) + tail, db=db, append=True
            )  # full pages, see message_put
        return out

    def ref_put(self, user_id: str, ref: str, ack: dict[str, Any]) -> None:
        """Keep the ack ``{channel, msg_id, ts[, inbox]}`` of ``user_id``'s send ``ref``."""
        txn, key, want = self.txn, user_id.encode(), ref_prefix(ref)
        cursor = txn.write_cursor("refs")
        if cursor.set_range_dup(key, want) and cursor.value().startswith(want):
            cursor.delete()  # a ref stored again: the new ack replaces the old
        txn.put("refs", key, ref_item(ref, txn.channel_number(ack["channel"]), ack))
