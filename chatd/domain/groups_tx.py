"""Groups: membership, the member cap and owner succession, as transaction functions.

Each function takes a :class:`storage.WriteTx` and runs inside one group-commit transaction, so
a group is read and rewritten in one atomic step: concurrent adds and removes never lose one
another, and a send (which reads the members in its own transaction) sees a group wholly before
or after each change.
"""

from __future__ import annotations

from dataclasses import replace

from chatd.domain.errors import BadRequest, Conflict, Forbidden, NotFound
from chatd.domain.memberships_tx import join
from chatd.domain.ports import Relay
from storage import Group, WriteTx


def _existing(tx: WriteTx, channel: str) -> Group:
    group = tx.group_get(channel)
    if group is None:
        raise NotFound(f"no group {channel!r}")
    return group


def group_members(tx: WriteTx, channel: str, user_id: str) -> tuple[str, ...]:
    """The members of group ``channel``; NotFound if unknown, Forbidden if ``user_id`` is not
    one of them."""
    members = _existing(tx, channel).members
    if user_id not in members:
        raise Forbidden(f"{user_id} is not a member of {channel}")
    return members


def create_group(
    tx: WriteTx,
    channel: str,
    *,
    name: str,
    owner: str,
    members: list[str],
    created_at: int,
    relay: Relay | None = None,
) -> Group:
    """A new group of ``members`` (the owner first); each joins with no unread backlog. In a
    cluster, members homed elsewhere join there, through the group's record (``relay``)."""
    if tx.group_get(channel) is not None:
        raise Conflict(f"group {channel!r} exists")
    group = Group(name, owner, tuple(members), created_at)
    tx.group_put(channel, group)
    for user in members:
        join(tx, user, channel)
    if relay is not None:
        relay.group(tx, channel, group, members)
    return group


def add_member(
    tx: WriteTx, channel: str, user_id: str, *, cap: int, relay: Relay | None = None
) -> Group:
    """Add ``user_id`` (nothing if already a member); BadRequest past ``cap`` members."""
    group = _existing(tx, channel)
    if user_id in group.members:
        return group
    if len(group.members) >= cap:
        raise BadRequest(f"group is full ({cap} members)")
    group = replace(group, members=(*group.members, user_id))
    tx.group_put(channel, group)
    join(tx, user_id, channel)
    if relay is not None:
        relay.group(tx, channel, group, group.members)
    return group


def remove_member(tx: WriteTx, channel: str, user_id: str, *, relay: Relay | None = None) -> Group:
    """Remove ``user_id`` (nothing if not a member) with their membership and read mark. If
    the owner leaves, the longest-standing member becomes owner (none: the owner is "")."""
    group = _existing(tx, channel)
    if user_id not in group.members:
        return group
    members = tuple(m for m in group.members if m != user_id)
    owner = group.owner
    if owner == user_id:
        owner = members[0] if members else ""
    group = replace(group, owner=owner, members=members)
    tx.group_put(channel, group)
    tx.membership_delete(user_id, channel)
    if relay is not None:
        relay.group(tx, channel, group, (*members, user_id))
    return group
