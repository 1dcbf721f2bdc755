"""Messages, inboxes and send refs: typed record operations and the paging reads.

``messages``: channel \\0 msg_id -> ``{from, body, ts}``. ``inboxes``: user \\0 seq ->
``[channel, msg_id]``. ``refs``: user \\0 ref -> the ack of that send (a dict the caller owns;
its ``ts`` is what the retention sweep reads). A channel's last msg_id and a user's inbox head
are not stored separately: each is the last key under its prefix (cached by the writer, see
``storage/env.py``), so there is no counter to keep in step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from storage.codec import after_prefix, int_key, int_suffix, pack, prefix, str_key, unpack
from storage.env import Txn
from storage.records import ChannelPage, InboxEntry, InboxPage, Message


def _message(channel: str, msg_id: int, raw: bytes) -> Message:
    rec = unpack(raw)
    return Message(channel, msg_id, rec["from"], rec["body"], rec["ts"])


def _fits(total: int, size: int, max_bytes: int | None, rows: int) -> bool:
    """The byte budget of a page: its first row always fits, later ones while the stored
    records add up to at most ``max_bytes`` (None: no budget)."""
    return max_bytes is None or rows == 0 or total + size <= max_bytes


class MessageReads:
    __slots__ = ()
    txn: Txn

    def message_get(self, channel: str, msg_id: int) -> Message | None:
        raw = self.txn.get("messages", int_key(channel, msg_id))
        return None if raw is None else _message(channel, msg_id, raw)

    def last_msg_id(self, channel: str) -> int:
        """The highest msg_id of ``channel`` (0 if none), counting ids claimed in this write."""
        return self.txn.last_id("messages", channel)

    def inbox_head(self, user_id: str) -> int:
        """The highest inbox seq of ``user_id`` (0 if none)."""
        return self.txn.last_id("inboxes", user_id)

    def ref_get(self, user_id: str, ref: str) -> dict[str, Any] | None:
        raw = self.txn.get("refs", str_key(user_id, ref))
        return None if raw is None else unpack(raw)

    def inbox(
        self, user_id: str, after: int, limit: int, max_bytes: int | None = None
    ) -> list[InboxEntry]:
        """Inbox entries with seq > ``after``, ascending, at most ``limit``; past the first, at
        most ``max_bytes`` of stored message records."""
        txn = self.txn
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
        pre = prefix(channel)
        cursor = self.txn.cursor("messages")
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


class MessageWrites:
    __slots__ = ()
    txn: Txn

    def next_msg_id(self, channel: str) -> int:
        """Claim ``channel``'s next msg_id (undone if this op or its batch fails)."""
        return self.txn.claim_id("messages", channel)

    def message_put(self, message: Message) -> None:
        record = {"from": message.sender, "body": message.body, "ts": message.ts}
        self.txn.put("messages", int_key(message.channel, message.msg_id), pack(record))

    def message_delete(self, channel: str, msg_id: int) -> bool:
        return self.txn.delete("messages", int_key(channel, msg_id))

    def inbox_append(self, user_id: str, channel: str, msg_id: int) -> int:
        """Append an entry for message (``channel``, ``msg_id``) to the user's inbox; its seq."""
        seq = self.txn.claim_id("inboxes", user_id)
        self.txn.put("inboxes", int_key(user_id, seq), pack([channel, msg_id]))
        return seq

    def inbox_append_many(self, users: Iterable[str], channel: str, msg_id: int) -> dict[str, int]:
        """:meth:`inbox_append` for each of ``users`` in turn: {user: the entry's seq}.

        One call per message instead of one per member (and the entry's value packed once):
        this is the hot loop of every send."""
        txn = self.txn
        claim, put, db = txn.claim_id, txn.raw.put, txn.handle("inboxes")
        value = pack([channel, msg_id])
        out: dict[str, int] = {}
        for user in users:
            seq = out[user] = claim("inboxes", user)
            put(int_key(user, seq), value, db=db)
        return out

    def ref_put(self, user_id: str, ref: str, ack: dict[str, Any]) -> None:
        self.txn.put("refs", str_key(user_id, ref), pack(ack))
