"""Relay cursors: what a channel's sequencer last sent to each other shard.

``relay``: channel \\0 shard -> msg_id (8 bytes, big-endian). The sequencer of a channel (see
docs/cluster.md) stores, in the transaction of each message it relays, the message's msg_id
under the destination shard; the next record to that shard carries it as ``prev``. A
destination applies a channel's records in that chain's order, so every device sees a channel in
msg_id order even when records arrive out of order (a resend overtaking, a restart).
"""

from __future__ import annotations

from storage.codec import str_key
from storage.env import Txn


class RelayReads:
    __slots__ = ()
    txn: Txn

    def relay_last(self, channel: str, shard: str) -> int:
        """The msg_id of ``channel`` last relayed to ``shard`` (0: none yet)."""
        raw = self.txn.get("relay", str_key(channel, shard))
        return 0 if raw is None else int.from_bytes(raw, "big")


class RelayWrites:
    __slots__ = ()
    txn: Txn

    def relay_set(self, channel: str, shard: str, msg_id: int) -> None:
        self.txn.put("relay", str_key(channel, shard), msg_id.to_bytes(8, "big"))
