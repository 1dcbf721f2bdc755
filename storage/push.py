"""Push subscriptions: typed record operations (no rule about who may subscribe what).

``push``: user \\0 subscription id -> record (a dict the caller owns: the kind, the URL or
endpoint, the secret or keys). A user's subscriptions sort together, so the send's commit finds
an offline recipient's subscriptions with one range scan, and a subscription belongs to the user
whose key holds it (a DELETE by anyone else finds nothing).
"""

from __future__ import annotations

from typing import Any

from storage.codec import pack, str_key, unpack
from storage.env import Txn


class PushReads:
    __slots__ = ()
    txn: Txn

    def push_sub_get(self, user_id: str, sub_id: str) -> dict[str, Any] | None:
        raw = self.txn.get("push", str_key(user_id, sub_id))
        return None if raw is None else unpack(raw)

    def push_subs(self, user_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(id, record) of every subscription of ``user_id``, ordered by id."""
        return [(sub_id, unpack(raw)) for sub_id, raw in self.txn.scan("push", user_id)]

    def push_sub_ids(self, user_id: str) -> list[str]:
        """The ids of ``user_id``'s subscriptions (no record decoded: the send's commit)."""
        return [sub_id for sub_id, _ in self.txn.scan("push", user_id)]

    def push_sub_keys(self) -> list[tuple[str, str]]:
        """(user, id) of every subscription, in key order: the push index at start-up."""
        out = []
        for key in self.txn.cursor("push").iternext(keys=True, values=False):
            user, _, sub_id = bytes(key).partition(b"\x00")
            out.append((user.decode(), sub_id.decode()))
        return out


class PushWrites:
    __slots__ = ()
    txn: Txn

    def push_sub_put(self, user_id: str, sub_id: str, record: dict[str, Any]) -> None:
        self.txn.put("push", str_key(user_id, sub_id), pack(record))

    def push_sub_delete(self, user_id: str, sub_id: str) -> bool:
        return self.txn.delete("push", str_key(user_id, sub_id))
