"""Cursor helpers shared by the transaction modules."""

from __future__ import annotations

from storage.codec import int_suffix, prefix
from storage.env import Txn


def after_prefix(name: str) -> bytes:
    """The smallest key above every key under ``name`` (NUL is the separator, so use 0x01)."""
    return prefix(name)[:-1] + b"\x01"


def last_id(txn: Txn, db: str, name: str) -> int:
    """The highest integer suffix stored under ``name`` in ``db`` (0 if none)."""
    cursor = txn.cursor(db)
    ok = cursor.prev() if cursor.set_range(after_prefix(name)) else cursor.last()
    if ok and cursor.key().startswith(prefix(name)):
        return int_suffix(cursor.key())
    return 0
