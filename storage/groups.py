"""Transaction functions for groups and per-user channel memberships (with read marks).

A group record is ``{name, owner, members, created_at}`` under its channel id. Every user has a
membership record per channel (``user \\0 channel -> {read}``): for groups from the moment they
join, for 1:1 channels from the first message. It lists a user's channels and keeps their read
mark. Each message also overwrites its channel's small ``channels`` record (last msg_id and ts),
so the channel list is ordered without reading any message.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from storage.codec import int_key, pack, str_key, unpack
from storage.env import Txn
from storage.errors import Conflict, GroupFull, NotFound, NotMember


def get_group(txn: Txn, channel: str) -> dict[str, Any] | None:
    raw = txn.get("groups", channel.encode())
    return None if raw is None else unpack(raw)


def _put_group(txn: Txn, channel: str, group: dict[str, Any]) -> None:
    txn.put("groups", channel.encode(), pack(group))


def group_members(txn: Txn, channel: str, user_id: str) -> list[str]:
    """Members of group ``channel``, checking ``user_id`` is one."""
    group = get_group(txn, channel)
    if group is None:
        raise NotFound(f"no group {channel!r}")
    if user_id not in group["members"]:
        raise NotMember(f"{user_id} is not a member of {channel}")
    return group["members"]  # type: ignore[no-any-return]


def join(txn: Txn, user_id: str, channel: str) -> None:
    """Record membership; the read mark starts at the channel's current end."""
    key = str_key(user_id, channel)
    if txn.get("memberships", key) is None:
        txn.put("memberships", key, pack({"read": txn.last_id("messages", channel)}))


def create_group(
    txn: Txn, channel: str, *, name: str, owner: str, members: list[str], created_at: int
) -> dict[str, Any]:
    if get_group(txn, channel) is not None:
        raise Conflict(f"group {channel!r} exists")
    group = {"name": name, "owner": owner, "members": members, "created_at": created_at}
    _put_group(txn, channel, group)
    for user in members:
        join(txn, user, channel)
    return group


def add_member(txn: Txn, channel: str, user_id: str, *, cap: int) -> dict[str, Any]:
    group = get_group(txn, channel)
    if group is None:
        raise NotFound(f"no group {channel!r}")
    if user_id not in group["members"]:
        if len(group["members"]) >= cap:
            raise GroupFull(f"group is full ({cap} members)")
        group["members"].append(user_id)
        _put_group(txn, channel, group)
        join(txn, user_id, channel)
    return group


def remove_member(txn: Txn, channel: str, user_id: str) -> dict[str, Any]:
    """Remove a member; if the owner leaves, the longest-standing member becomes owner."""
    group = get_group(txn, channel)
    if group is None:
        raise NotFound(f"no group {channel!r}")
    if user_id in group["members"]:
        group["members"].remove(user_id)
        if group["owner"] == user_id:
            group["owner"] = group["members"][0] if group["members"] else ""
        _put_group(txn, channel, group)
        txn.delete("memberships", str_key(user_id, channel))
    return group


def mark_read(txn: Txn, user_id: str, channel: str, msg_id: int) -> bool:
    """Raise the user's read mark to ``msg_id``; False (nothing stored) if it was not higher."""
    key = str_key(user_id, channel)
    raw = txn.get("memberships", key)
    record = {"read": 0} if raw is None else unpack(raw)
    if msg_id <= record["read"]:
        return False
    record["read"] = msg_id
    txn.put("memberships", key, pack(record))
    return True


@dataclass(frozen=True, slots=True)
class ChannelState:
    """One row of a user's channel list (``last_ts`` is 0 while the channel has no message)."""

    channel: str
    read_msg_id: int
    last_msg_id: int
    last_ts: int


def set_last(txn: Txn, channel: str, msg_id: int, ts: int) -> None:
    txn.put("channels", channel.encode(), pack([msg_id, ts]))


def last_of(txn: Txn, channel: str) -> tuple[int, int]:
    """(last msg_id, its ts) of ``channel``; (0, 0) if it has no message."""
    raw = txn.get("channels", channel.encode())
    if raw is not None:
        msg_id, ts = unpack(raw)
        return msg_id, ts
    # Written before the channels record existed: read the last message once.
    msg_id = txn.last_id("messages", channel)
    message = txn.get("messages", int_key(channel, msg_id)) if msg_id else None
    return (msg_id, unpack(message)["ts"]) if message is not None else (0, 0)


def channel_page(
    txn: Txn, user_id: str, *, limit: int, after: tuple[int, str] | None = None
) -> list[ChannelState]:
    """At most ``limit`` of the user's channels, most recent last message first (ties by channel
    id), starting after the row whose (last_ts, channel) is ``after``.

    Every membership is visited (one small record each, no message is read) and only the
    page's rows are kept, so a page costs O(channels x log limit).
    """
    start = None if after is None else (-after[0], after[1])
    rows = []
    for channel, raw in txn.scan("memberships", user_id):
        msg_id, ts = last_of(txn, channel)
        if start is None or (-ts, channel) > start:
            rows.append((-ts, channel, raw, msg_id))
    page = heapq.nsmallest(limit, rows)
    return [ChannelState(ch, unpack(raw)["read"], msg_id, -ts) for ts, ch, raw, msg_id in page]
