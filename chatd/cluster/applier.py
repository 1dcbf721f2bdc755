"""Applies what other shards relayed to this one, once each and in channel order.

Records come from this shard's Redis stream (:meth:`Applier.on_records`, called by the
broker) and, for a send this shard forwarded, straight from the sequencer's answer
(:meth:`Applier.offer`); the same record may come both ways, or twice. Each batch is one
LMDB transaction of ``replica_tx.apply_message`` calls; after its commit, in commit order, the
new inbox entries go to online devices, a forwarded send's device gets its ack, and records
that arrived before their predecessor wait in ``held`` until it is applied. Applied and
duplicate records are confirmed to their sequencer, which then deletes them from its outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from chatd.cluster import wire
from chatd.cluster.publisher import Publisher, Sender
from chatd.cluster.relay import GROUP_REPLICA, ClusterRelay
from chatd.domain import friends_tx
from chatd.domain.messaging import Messenger
from chatd.domain.ports import DeviceSink, OutboxHook, Relay
from chatd.domain.replica_tx import APPLIED, EARLY, Replicated, apply_group, apply_message
from storage import Group, Store, WriteTx

log = logging.getLogger("chatd.cluster")


Record = wire.Relayed | wire.Op


def _apply_all(
    tx: WriteTx, batch: list[Record], relay: Relay, hooks: Sequence[OutboxHook] = ()
) -> list[Replicated | None]:
    """Apply a batch in one transaction: messages in channel order, ops (None) as they come.
    ``hooks`` (push) store their records with each message, as in a local send."""
    out: list[Replicated | None] = []
    for r in batch:
        if isinstance(r, wire.Relayed):
            m, prev, members, ref = r.message, r.prev, r.members, r.ref
            out.append(apply_message(tx, m, prev=prev, members=members, ref=ref, hooks=hooks))
        elif r.kind == wire.FRIEND:
            d = r.data
            friends_tx.apply_friend(tx, d["u"], d["o"], d["s"], relay)
            out.append(None)
        else:
            d = r.data
            name, owner, members, created_at = d["g"]
            group = Group(name, owner, tuple(members), created_at)
            apply_group(tx, d["c"], group, version=d["v"], users=d["u"], version_key=GROUP_REPLICA)
            out.append(None)
    return out


class Applier:
    def __init__(
        self,
        here: str,
        store: Store,
        messenger: Messenger,
        publisher: Publisher,
        broker: Sender,
        relay: ClusterRelay,
    ) -> None:
        self.here = here
        self.relay = relay
        self.store = store
        self.messenger = messenger
        self.publisher = publisher
        self.broker = broker
        #: forwarded sends waiting for their record: (sender, ref) -> the sending device
        self.waiting: dict[tuple[str, str], DeviceSink] = {}
        #: records whose predecessor is not applied yet: (channel, prev) -> (entry id, record)
        self.held: dict[tuple[str, int], tuple[str, Record]] = {}
        self.applied = 0
        self.duplicates = 0

    async def on_records(self, entries: Sequence[tuple[str, bytes]]) -> list[str]:
        """A batch from the stream; the entry ids that may be acknowledged."""
        done: list[str] = []
        batch: list[tuple[str, Record]] = []
        for entry_id, payload in entries:
            try:
                record = wire.decode(payload)
            except ValueError as exc:
                log.error("dropping stream entry %s: %s", entry_id, exc)
                done.append(entry_id)
                continue
            if isinstance(record, wire.Relayed | wire.Op):
                batch.append((entry_id, record))
            else:
                self.publisher.confirmed(record[1])
                done.append(entry_id)
        if batch:
            done += await self._apply(batch)
        return done

    async def offer(self, payloads: Sequence[bytes]) -> None:
        """Records handed over by their sequencer in answer to forwarded sends."""
        batch: list[tuple[str, Record]] = []
        for payload in payloads:
            record = wire.decode(payload)
            if isinstance(record, wire.Relayed | wire.Op):
                batch.append(("", record))
        if batch:
            await self._apply(batch)

    async def _apply(self, batch: list[tuple[str, Record]]) -> list[str]:
        done: list[str] = []
        confirms: dict[str, list[int]] = {}
        while batch:
            ready: list[tuple[str, Record]] = []
            records = [r for _, r in batch]
            results = await self.store.write(
                partial(
                    _apply_all,
                    batch=records,
                    relay=self.relay,
                    hooks=self.messenger.outbox_hooks,
                ),
                partial(self._committed, batch, ready=ready),
            )
            for (entry_id, record), result in zip(batch, results, strict=True):
                if result is None or result.outcome != EARLY:
                    if entry_id:
                        done.append(entry_id)
                    confirms.setdefault(record.origin, []).append(record.seq)
            batch = ready
        await self._confirm(confirms)
        return done

    def _committed(
        self,
        batch: list[tuple[str, Record]],
        results: list[Replicated | None],
        *,
        ready: list[tuple[str, Record]],
    ) -> None:
        """In commit order: deliver, answer forwarded sends, hold early records and release
        those whose predecessor just landed."""
        for (entry_id, record), result in zip(batch, results, strict=True):
            if result is None or not isinstance(record, wire.Relayed):
                self.relay.committed()  # an op may have stored a record in answer
                continue
            message = record.message
            if result.outcome == EARLY:
                self.held[(message.channel, record.prev)] = (entry_id, record)
                continue
            device = self.waiting.pop((message.sender, record.ref), None) if record.ref else None
            if result.outcome == APPLIED:
                self.applied += 1
                self.messenger.fan_out(result.inbox, message, exclude=device)
                ack = result.ack
            else:
                self.duplicates += 1
                ack = self.store.sent_ack(message.sender, record.ref) if device else None
            if device is not None:
                answer: dict[str, Any] = {"type": "ack", "ref": record.ref, **(ack or {})}
                device.finished(answer)
            successor = self.held.pop((message.channel, message.msg_id), None)
            if successor is not None:
                ready.append(successor)

    async def _confirm(self, confirms: dict[str, list[int]]) -> None:
        """Tell each sequencer which of its records are applied here: queued with the
        publisher's next XADDs, so applying never waits on Redis for it."""
        for origin, seqs in confirms.items():
            self.publisher.confirm(origin, wire.confirm_payload(self.here, seqs))

    def expect(self, sender: str, ref: str, device: DeviceSink) -> None:
        """A forwarded send: its device gets the ack once its record is applied here."""
        self.waiting[(sender, ref)] = device

    def give_up(self, sender: str, ref: str) -> DeviceSink | None:
        """Stop waiting for a forwarded send's record; its device, if it was still waiting."""
        return self.waiting.pop((sender, ref), None)
