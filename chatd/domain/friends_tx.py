"""Friendships: the request/accept state machine, as transaction functions.

Each pair of users has two records, one per direction. ``a`` asking ``b`` stores ``a -> b:
requested`` and ``b -> a: pending``; ``b`` asking back (or ``a`` asking again after ``b`` did)
makes both ``friends``. Asking again while ``requested`` changes nothing. Removing deletes both
directions, whoever removes. Only ``friends`` shares presence (see ``presence.py``).
"""

from __future__ import annotations

from storage import WriteTx

REQUESTED, PENDING, FRIENDS = "requested", "pending", "friends"


def request_friend(tx: WriteTx, user_id: str, other: str) -> str:
    """``user_id`` asks ``other``; the state of ``user_id -> other`` afterwards."""
    if tx.friend_get(user_id, other) in (PENDING, FRIENDS):
        state, theirs = FRIENDS, FRIENDS
    else:
        state, theirs = REQUESTED, PENDING
    tx.friend_put(user_id, other, state)
    tx.friend_put(other, user_id, theirs)
    return state


def remove_friend(tx: WriteTx, user_id: str, other: str) -> None:
    """End the friendship or request between the two users, in both directions."""
    tx.friend_delete(user_id, other)
    tx.friend_delete(other, user_id)
