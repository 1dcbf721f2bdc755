"""Channel memberships and read marks: the rules, as transaction functions.

Each function takes a :class:`storage.WriteTx` and runs inside one group-commit transaction
(``Store.write`` / ``Store.submit``), so what it reads and what it writes are one atomic step.
"""

from __future__ import annotations

from storage import Membership, WriteTx


def join(tx: WriteTx, user_id: str, channel: str) -> None:
    """Make ``user_id`` a member of ``channel`` (nothing if already one); the read mark starts
    at the channel's current end, so joining brings no unread backlog."""
    if tx.membership_get(user_id, channel) is None:
        tx.membership_put(user_id, channel, Membership(read=tx.last_msg_id(channel)))


def mark_read(tx: WriteTx, user_id: str, channel: str, msg_id: int) -> bool:
    """Raise the user's read mark in ``channel`` to ``msg_id``. Marks only move forward: False
    (nothing stored) if it was not higher than the stored one."""
    current = tx.membership_get(user_id, channel)
    if msg_id <= (0 if current is None else current.read):
        return False
    tx.membership_put(user_id, channel, Membership(read=msg_id))
    return True
