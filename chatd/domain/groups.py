"""Groups over HTTP: create, inspect, add and remove members; the user's channel list."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from chatd.domain import channels, groups_tx, validate
from chatd.domain.accounts import now_ms
from chatd.domain.errors import BadRequest, Forbidden, NotFound
from chatd.domain.ports import Relay
from storage import ChannelState, Group, Store

NAME_MAX = 100
CHANNELS_DEFAULT, CHANNELS_MAX = 100, 500  # GET /v1/channels page size
CURSOR_CHANNEL_MAX = 200


def group_view(channel: str, group: Group) -> dict[str, Any]:
    return {
        "channel_id": channel,
        "name": group.name,
        "owner": group.owner,
        "members": list(group.members),
        "created_at": group.created_at,
    }


class Groups:
    def __init__(
        self,
        store: Store,
        *,
        max_members: int,
        exists: Callable[[str], Awaitable[bool]] | None = None,
        local: Callable[[str], bool] | None = None,
        relay: Relay | None = None,
    ) -> None:
        self.store = store
        self.relay = relay  # a cluster: members homed elsewhere hear of changes
        self.cap = max_members
        #: whether an account exists (in a cluster, maybe on another shard)
        self.exists = exists or self._exists_here
        #: whether a channel is sequenced here (a cluster creates groups that are)
        self.local = local or (lambda channel: True)

    async def _exists_here(self, user_id: str) -> bool:
        return self.store.account(user_id) is not None

    def _group(self, channel: str, user_id: str) -> Group:
        """The group, if ``user_id`` is a member. A group that does not exist is refused
        exactly like one the user is not in (``channels.not_a_member``): ids cannot be probed."""
        if not channels.GROUP_ID.fullmatch(channel):
            raise NotFound(f"no group {channel!r}")  # no group can have this id
        group = self.store.group(channel)
        if group is None or user_id not in group.members:
            raise channels.not_a_member(channel)
        return group

    async def create(self, owner: str, data: dict[str, Any]) -> dict[str, Any]:
        name = validate.field(data, "name", str)
        if not 1 <= len(name.strip()) <= NAME_MAX:
            raise BadRequest(f"name must be 1 to {NAME_MAX} characters")
        raw = validate.field(data, "members", list, required=False) or []
        members = [owner]
        for user in raw:
            user = validate.user_id(user, "members[]")
            if user not in members:
                members.append(user)
        if len(members) > self.cap:
            raise BadRequest(f"a group has at most {self.cap} members, the owner included")
        for user in members[1:]:
            if not await self.exists(user):
                raise NotFound(f"no user {user!r}")
        channel = channels.new_group_id()
        while not self.local(channel):  # in a cluster: a group lives on its creator's shard
            channel = channels.new_group_id()
        op = partial(
            groups_tx.create_group,
            channel=channel,
            name=name.strip(),
            owner=owner,
            members=members,
            created_at=now_ms(),
            relay=self.relay,
        )
        group = await self.store.write(op)
        return group_view(channel, group)

    def get(self, user_id: str, channel: str) -> dict[str, Any]:
        return group_view(channel, self._group(channel, user_id))

    async def add(self, user_id: str, channel: str, member: str) -> dict[str, Any]:
        group = self._group(channel, user_id)
        if group.owner != user_id:
            raise Forbidden("only the group's owner adds members")
        member = validate.user_id(member)
        if not await self.exists(member):
            raise NotFound(f"no user {member!r}")
        op = partial(
            groups_tx.add_member, channel=channel, user_id=member, cap=self.cap, relay=self.relay
        )
        group = await self.store.write(op)
        return group_view(channel, group)

    async def remove(self, user_id: str, channel: str, member: str) -> None:
        group = self._group(channel, user_id)
        if user_id != member and group.owner != user_id:
            raise Forbidden("only the owner removes others; a member may remove itself")
        op = partial(
            groups_tx.remove_member,
            channel=channel,
            user_id=validate.user_id(member),
            relay=self.relay,
        )
        await self.store.write(op)

    def channel_list(self, user_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """A page of the user's channels, most recent activity first, with read marks and
        unread counts: ``{channels, next}``; ``next`` is the ``cursor`` of the following page
        (None after the last). Query: ``limit`` (default 100, clamped to 500), ``cursor``."""
        limit = validate.query_int(query, "limit")
        if limit is None:
            limit = CHANNELS_DEFAULT
        if limit < 1:
            raise BadRequest("limit must be at least 1")
        limit = min(limit, CHANNELS_MAX)
        cursor = query.get("cursor")
        after = _parse_cursor(cursor) if cursor else None
        states = self.store.channels(user_id, limit=limit + 1, after=after)
        rows = [self._channel_row(user_id, state) for state in states[:limit]]
        last = states[limit - 1] if len(states) > limit else None
        return {"channels": rows, "next": f"{last.last_ts}:{last.channel}" if last else None}

    def _channel_row(self, user_id: str, state: ChannelState) -> dict[str, Any]:
        if channels.is_group(state.channel):
            group = self.store.group(state.channel)
            kind, name = "group", group.name if group else ""
        else:
            users = channels.dm_members(state.channel) or []
            other = next((u for u in users if u != user_id), user_id)
            account = self.store.account(other)
            kind, name = "dm", account["display_name"] if account else other
        read = min(state.read_msg_id, state.last_msg_id)
        return {
            "channel_id": state.channel,
            "kind": kind,
            "name": name,
            "last_msg_id": state.last_msg_id,
            "read_msg_id": read,
            "unread": state.last_msg_id - read,
        }


def _parse_cursor(values: list[str]) -> tuple[int, str]:
    """A ``next`` value, ``<last ts>:<channel id>``, back to the position it names."""
    ts, sep, channel = values[0].partition(":")
    ok = len(values) == 1 and ts.isascii() and ts.isdigit() and len(ts) <= 18
    if not (ok and sep and 0 < len(channel) <= CURSOR_CHANNEL_MAX):
        raise BadRequest("cursor must be the next value of a previous page")
    return int(ts), channel
