"""Transaction functions for accounts, tokens and friendships."""

from __future__ import annotations

from typing import Any

from storage.codec import pack, str_key, unpack
from storage.env import Txn
from storage.errors import Conflict

REQUESTED, PENDING, FRIENDS = "requested", "pending", "friends"


def get_account(txn: Txn, user_id: str) -> dict[str, Any] | None:
    raw = txn.get("accounts", user_id.encode())
    return None if raw is None else unpack(raw)


def create_account(txn: Txn, user_id: str, record: dict[str, Any]) -> None:
    if not txn.put("accounts", user_id.encode(), pack(record), overwrite=False):
        raise Conflict(f"user_id {user_id!r} is taken")


def update_account(txn: Txn, user_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    record = get_account(txn, user_id)
    if record is None:
        raise KeyError(user_id)
    record.update(changes)
    txn.put("accounts", user_id.encode(), pack(record))
    return record


def put_token(txn: Txn, digest: bytes, user_id: str, expires_at: int) -> None:
    txn.put("tokens", digest, pack({"user": user_id, "exp": expires_at}))


def get_token(txn: Txn, digest: bytes) -> dict[str, Any] | None:
    raw = txn.get("tokens", digest)
    return None if raw is None else unpack(raw)


def delete_token(txn: Txn, digest: bytes) -> bool:
    return txn.delete("tokens", digest)


def friend_state(txn: Txn, user_id: str, other: str) -> str | None:
    raw = txn.get("friends", str_key(user_id, other))
    return None if raw is None else unpack(raw)


def request_friend(txn: Txn, user_id: str, other: str) -> str:
    """``user_id`` asks ``other``: ``requested`` until ``other`` asks back, then ``friends``."""
    mine = friend_state(txn, user_id, other)
    if mine in (PENDING, FRIENDS):
        state, theirs = FRIENDS, FRIENDS
    else:
        state, theirs = REQUESTED, PENDING
    txn.put("friends", str_key(user_id, other), pack(state))
    txn.put("friends", str_key(other, user_id), pack(theirs))
    return state


def remove_friend(txn: Txn, user_id: str, other: str) -> None:
    txn.delete("friends", str_key(user_id, other))
    txn.delete("friends", str_key(other, user_id))


def list_friends(txn: Txn, user_id: str) -> list[tuple[str, str]]:
    return [(other, unpack(state)) for other, state in txn.scan("friends", user_id)]
