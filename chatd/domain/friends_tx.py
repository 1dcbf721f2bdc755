"""Friendships: the request/accept state machine, as transaction functions.

Each pair of users has two records, one per direction. ``a`` asking ``b`` stores ``a -> b:
requested`` and ``b -> a: pending``; ``b`` asking back (or ``a`` asking again after ``b`` did)
makes both ``friends``. Asking again while ``requested`` changes nothing. Removing deletes both
directions, whoever removes. Only ``friends`` shares presence (see ``presence.py``).
"""

from __future__ import annotations

from chatd.domain.ports import Relay
from storage import WriteTx

REQUESTED, PENDING, FRIENDS = "requested", "pending", "friends"


def _put(tx: WriteTx, owner: str, other: str, state: str | None, relay: Relay | None) -> None:
    """Set ``owner``'s row about ``other`` (None: delete it), on ``owner``'s home shard."""
    if relay is not None and relay.friend(tx, owner, other, state):
        return
    if state is None:
        tx.friend_delete(owner, other)
    else:
        tx.friend_put(owner, other, state)


def request_friend(tx: WriteTx, user_id: str, other: str, relay: Relay | None = None) -> str:
    """``user_id`` asks ``other``; the state of ``user_id -> other`` afterwards. In a cluster
    ``other``'s row lives on ``other``'s home shard and gets there as a record (``relay``)."""
    if tx.friend_get(user_id, other) in (PENDING, FRIENDS):
        state, theirs = FRIENDS, FRIENDS
    else:
        state, theirs = REQUESTED, PENDING
    tx.friend_put(user_id, other, state)
    _put(tx, other, user_id, theirs, relay)
    return state


def remove_friend(tx: WriteTx, user_id: str, other: str, relay: Relay | None = None) -> None:
    """End the friendship or request between the two users, in both directions."""
    tx.friend_delete(user_id, other)
    _put(tx, other, user_id, None, relay)


def apply_friend(tx: WriteTx, owner: str, other: str, state: str | None, relay: Relay) -> None:
    """A row about ``other`` that ``other``'s home shard set for ``owner`` (homed here).

    Two requests that crossed (each side asked before the other's record arrived) meet here
    as PENDING over REQUESTED: both rows become FRIENDS, as one shard would have made them.
    """
    if state is None:
        tx.friend_delete(owner, other)
    elif state == PENDING and tx.friend_get(owner, other) == REQUESTED:
        tx.friend_put(owner, other, FRIENDS)
        _put(tx, other, owner, FRIENDS, relay)
    else:
        tx.friend_put(owner, other, state)
