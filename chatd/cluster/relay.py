"""The sequencer's side of a cross-shard message: records stored in the message's commit.

:class:`ClusterRelay` implements the domain's ``Relay`` port. ``split`` sorts a channel's
members by home shard; ``write`` runs inside the commit (writer thread) and stores one outbox
record per other shard, chained to the previous one sent there by the ``relay`` cursor, so a
destination applies a channel in msg_id order. The :class:`~chatd.cluster.publisher.Publisher`
sends the records and deletes each once its destination confirms it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chatd.cluster import wire
from chatd.domain.ports import Place
from storage import Group, Message, WriteTx

TOPIC = "cluster"
#: the relay cursor names that hold a group's record version (no shard has these names)
GROUP_VERSION, GROUP_REPLICA = "#version", "#replica"


class ClusterRelay:
    def __init__(self, here: str, home: Callable[[str], Place], kick: Callable[[], None]) -> None:
        self.here = here
        self.home = home
        self.kick = kick

    def split(self, members: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
        local: list[str] = []
        remote: dict[str, list[str]] = {}
        for user in members:
            place = self.home(user)
            if place.local:
                local.append(user)
            else:
                remote.setdefault(place.shard, []).append(user)
        return local, remote

    def write(
        self, tx: WriteTx, message: Message, remote: Mapping[str, Sequence[str]], ref: str
    ) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for shard, users in remote.items():
            prev = tx.relay_last(message.channel, shard)
            tx.relay_set(message.channel, shard, message.msg_id)
            sender_here = message.sender in users
            record = wire.message_record(
                message, prev=prev, members=users, ref=ref if sender_here else ""
            )
            out[shard] = self._store(tx, shard, wire.MESSAGE, record)
        return out

    def committed(self) -> None:
        self.kick()

    def _store(self, tx: WriteTx, shard: str, kind: str, record: dict[str, Any]) -> bytes:
        seq = tx.outbox_next(TOPIC)
        payload = wire.message_payload(self.here, seq, record, kind)
        tx.outbox_put(TOPIC, seq, wire.pack([shard, payload]))
        return payload

    def friend(self, tx: WriteTx, owner: str, other: str, state: str | None) -> bool:
        place = self.home(owner)
        if place.local:
            return False
        self._store(tx, place.shard, wire.FRIEND, {"u": owner, "o": other, "s": state})
        return True

    def group(self, tx: WriteTx, channel: str, group: Group, users: Sequence[str]) -> None:
        _, remote = self.split(users)
        if not remote:
            return
        version = tx.relay_last(channel, GROUP_VERSION) + 1
        tx.relay_set(channel, GROUP_VERSION, version)
        record = {
            "c": channel,
            "v": version,
            "g": [group.name, group.owner, list(group.members), group.created_at],
        }
        for shard, members in remote.items():
            self._store(tx, shard, wire.GROUP, {**record, "u": members})
