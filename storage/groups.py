"""Groups, memberships and each channel's last message: typed record operations and the
channel list.

``groups``: channel -> ``{name, owner, members, created_at}``. ``memberships``: user \\0
channel -> ``{read}``: a user's channels (groups and 1:1) and read marks. ``channels``:
channel -> ``[last msg_id, its ts]``, kept by whoever stores a message, so the channel list is
ordered without reading any message.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from storage.codec import from_ordered, from_u48, pack, str_key, unpack
from storage.env import Txn
from storage.records import ChannelState, Group, Membership


class GroupReads:
    __slots__ = ()
    txn: Txn

    def group_get(self, channel: str) -> Group | None:
        raw = self.txn.get("groups", channel.encode())
        if raw is None:
            return None
        rec = unpack(raw)
        return Group(rec["name"], rec["owner"], tuple(rec["members"]), rec["created_at"])

    def membership_get(self, user_id: str, channel: str) -> Membership | None:
        raw = self.txn.get("memberships", str_key(user_id, channel))
        return None if raw is None else Membership(unpack(raw)["read"])

    def memberships(self, user_id: str) -> Iterator[tuple[str, Membership]]:
        """(channel, membership) of every channel of ``user_id``, ordered by channel id."""
        for channel, raw in self.txn.scan("memberships", user_id):
            yield channel, Membership(unpack(raw)["read"])

    def channel_last(self, channel: str) -> tuple[int, int]:
        """(last msg_id, its ts) of ``channel``; (0, 0) if it has no message."""
        raw = self.txn.get("channels", channel.encode())
        if raw is not None:
            msg_id, ts = unpack(raw)
            return msg_id, ts
        # Written before the channels record existed: read the last message once.
        cursor = self.txn.cursor("messages")
        if not (cursor.set_key(channel.encode()) and cursor.last_dup()):
            return 0, 0
        item = cursor.value()
        msg_id, at = from_ordered(item)
        return msg_id, from_u48(item, at)

    def channel_list(
        self, user_id: str, *, limit: int, after: tuple[int, str] | None = None
    ) -> list[ChannelState]:
        """At most ``limit`` of the user's channels, most recent last message first (ties by
        channel id), starting after the row whose (last_ts, channel) is ``after``.

        Every membership is visited (one small record each, no message is read) and only the
        page's rows are kept, so a page costs O(channels x log limit).
        """
        start = None if after is None else (-after[0], after[1])
        rows = []
        for channel, raw in self.txn.scan("memberships", user_id):  # decoded for the page only
            msg_id, ts = self.channel_last(channel)
            if start is None or (-ts, channel) > start:
                rows.append((-ts, channel, raw, msg_id))
        page = heapq.nsmallest(limit, rows)
        return [ChannelState(ch, unpack(raw)["read"], msg_id, -ts) for ts, ch, raw, msg_id in page]


class GroupWrites:
    __slots__ = ()
    txn: Txn

    def group_put(self, channel: str, group: Group) -> None:
        record = {
            "name": group.name,
            "owner": group.owner,
            "members": list(group.members),
            "created_at": group.created_at,
        }
        self.txn.put("groups", channel.encode(), pack(record))

    def group_delete(self, channel: str) -> bool:
        return self.txn.delete("groups", channel.encode())

    def membership_put(self, user_id: str, channel: str, membership: Membership) -> None:
        self.txn.put("memberships", str_key(user_id, channel), pack({"read": membership.read}))

    def membership_delete(self, user_id: str, channel: str) -> bool:
        return self.txn.delete("memberships", str_key(user_id, channel))

    def channel_last_put(self, channel: str, msg_id: int, ts: int) -> None:
        self.txn.put("channels", channel.encode(), pack([msg_id, ts]))
