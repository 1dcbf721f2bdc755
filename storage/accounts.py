"""Accounts, tokens and friendships: typed record operations (no rule about who may do what).

``accounts``: user_id -> record (a dict the caller owns). ``tokens``: sha256(token) ->
``{user, exp}``. ``friends``: user \\0 other -> state (a string the caller owns).
"""

from __future__ import annotations

from typing import Any

from storage.codec import pack, str_key, unpack
from storage.env import Txn
from storage.errors import Conflict


class AccountReads:
    __slots__ = ()
    txn: Txn

    def account_get(self, user_id: str) -> dict[str, Any] | None:
        raw = self.txn.get("accounts", user_id.encode())
        return None if raw is None else unpack(raw)

    def token_get(self, digest: bytes) -> dict[str, Any] | None:
        raw = self.txn.get("tokens", digest)
        return None if raw is None else unpack(raw)

    def friend_get(self, user_id: str, other: str) -> str | None:
        raw = self.txn.get("friends", str_key(user_id, other))
        return None if raw is None else unpack(raw)  # type: ignore[no-any-return]

    def friends(self, user_id: str) -> list[tuple[str, str]]:
        """(other, state) of every friend record of ``user_id``, ordered by ``other``."""
        return [(other, unpack(state)) for other, state in self.txn.scan("friends", user_id)]


class AccountWrites:
    __slots__ = ()
    txn: Txn

    def account_insert(self, user_id: str, record: dict[str, Any]) -> None:
        """Store a new account; Conflict (nothing stored) if ``user_id`` has one."""
        if not self.txn.put("accounts", user_id.encode(), pack(record), overwrite=False):
            raise Conflict(f"user_id {user_id!r} is taken")

    def account_update(self, user_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into the account record; KeyError if there is none."""
        raw = self.txn.get("accounts", user_id.encode())
        if raw is None:
            raise KeyError(user_id)
        record: dict[str, Any] = unpack(raw)
        record.update(changes)
        self.txn.put("accounts", user_id.encode(), pack(record))
        return record

    def token_put(self, digest: bytes, user_id: str, expires_at: int) -> None:
        self.txn.put("tokens", digest, pack({"user": user_id, "exp": expires_at}))

    def token_delete(self, digest: bytes) -> bool:
        return self.txn.delete("tokens", digest)

    def friend_put(self, user_id: str, other: str, state: str) -> None:
        self.txn.put("friends", str_key(user_id, other), pack(state))

    def friend_delete(self, user_id: str, other: str) -> bool:
        return self.txn.delete("friends", str_key(user_id, other))
