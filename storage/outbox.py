"""The outbox: records a write stores for a consumer to act on later, in the same transaction.

``outbox``: topic \\0 seq (8 bytes, big-endian) -> the record (opaque bytes). A feature appends
to its topic inside the transaction that commits what the record is about, so the record exists
exactly when that commit does; its consumer reads the pending records in seq order, does the
work and deletes them. A crash in between loses nothing: the records are still pending.

Seqs are never reused: the key at seq 0 of each topic holds the last seq handed out, so a
consumer that deletes every record of its topic still gets higher seqs afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable

from storage.codec import int_key, int_suffix, prefix
from storage.env import Txn

_HEAD = 0  # the seq whose key holds a topic's last seq


class OutboxReads:
    __slots__ = ()
    txn: Txn

    def outbox_pending(self, topic: str, limit: int, after: int = 0) -> list[tuple[int, bytes]]:
        """At most ``limit`` (seq, record) of ``topic`` with seq > ``after``, oldest first."""
        out: list[tuple[int, bytes]] = []
        pre = prefix(topic)
        cursor = self.txn.cursor("outbox")
        if limit < 1 or not cursor.set_range(int_key(topic, max(after, _HEAD) + 1)):
            return out
        for key, value in cursor:
            if not key.startswith(pre):
                break
            out.append((int_suffix(key), value))
            if len(out) >= limit:
                break
        return out


class OutboxWrites:
    __slots__ = ()
    txn: Txn

    def outbox_append(self, topic: str, record: bytes) -> int:
        """Append ``record`` to ``topic``; its seq (one above every seq the topic ever had)."""
        seq = self.outbox_next(topic)
        self.outbox_put(topic, seq, record)
        return seq

    def outbox_next(self, topic: str) -> int:
        """Claim ``topic``'s next seq, for a record that must name its own seq: store it with
        :meth:`outbox_put` in the same transaction."""
        head = int_key(topic, _HEAD)
        raw = self.txn.get("outbox", head)
        seq = (0 if raw is None else int.from_bytes(raw, "big")) + 1
        self.txn.put("outbox", head, seq.to_bytes(8, "big"))
        return seq

    def outbox_put(self, topic: str, seq: int, record: bytes) -> None:
        self.txn.put("outbox", int_key(topic, seq), record)

    def outbox_delete(self, topic: str, seqs: Iterable[int]) -> int:
        """Delete the records ``seqs`` of ``topic``; how many there were."""
        return sum(self.txn.delete("outbox", int_key(topic, s)) for s in seqs if s > _HEAD)
