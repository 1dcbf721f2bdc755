"""Sends the cluster outbox to the other shards and deletes what they confirm.

Records wait in LMDB (topic ``cluster`` of the outbox) from the commit of their message until
their destination confirms it applied them, so neither a crash, nor a Redis restart, nor a lost
stream entry loses one: an unconfirmed record is sent again every ``resend_after`` seconds, and
destinations apply idempotently. Sends are pipelined XADDs, one round trip per wake-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import trio

from chatd.cluster import wire
from chatd.cluster.relay import TOPIC
from storage import Store

log = logging.getLogger("chatd.cluster")
NEVER = float("-inf")


class Sender(Protocol):
    async def send(self, records: list[tuple[str, bytes]]) -> None: ...


class Publisher:
    def __init__(
        self,
        store: Store,
        broker: Sender,
        *,
        resend_after: float = 5.0,
        batch: int = 1024,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.store = store
        self.broker = broker
        self.resend_after = resend_after
        #: What ``resend_after`` is measured on: the broker's loop-progress clock in a shard,
        #: so a stalled loop does not resend everything it sent just before the stall.
        self.clock = clock
        self.batch = batch
        #: outbox seq -> [destination, payload, when last sent]
        self.unconfirmed: dict[int, list[Any]] = {}
        self.loaded = 0  # the highest outbox seq read into ``unconfirmed``
        self.done: list[int] = []  # confirmed seqs waiting to be deleted
        self.confirmations: list[tuple[str, bytes]] = []  # to other shards, next send
        self.handed: dict[int, float] = {}  # seqs handed over in a reply, not loaded yet: when
        self._wake = trio.Event()
        self._deleting = trio.Event()
        self.sent = 0
        self.resent = 0

    def kick(self) -> None:
        """New records were committed: send them now."""
        self._wake.set()

    def confirmed(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            self.unconfirmed.pop(seq, None)
            self.handed.pop(seq, None)
            self.done.append(seq)
        self._wake.set()

    def confirm(self, origin: str, payload: bytes) -> None:
        """Send a confirmation to ``origin`` with the next XADDs (lost if Redis is down: the
        origin sends its records again, and they are confirmed then)."""
        self.confirmations.append((origin, payload))
        self._wake.set()

    def handed_over(self, payload: bytes) -> None:
        """A record went to its destination in a reply (a forwarded send): send it through
        Redis only if it is not confirmed within ``resend_after``."""
        seq = wire.unpack(payload)[2]
        now = self.clock()
        entry = self.unconfirmed.get(seq)
        if entry is not None:
            entry[2] = max(entry[2], now)
        else:
            self.handed[seq] = now

    def pending(self) -> int:
        return len(self.unconfirmed)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._delete_confirmed)
            while True:
                # A kick from here on (a commit while this round sends) starts the next round
                # at once: the event is new before the round looks at the outbox.
                self._wake = trio.Event()
                self._load()
                await self._send_due()
                if self.done:
                    self._deleting.set()
                with trio.move_on_after(min(1.0, self.resend_after)):
                    await self._wake.wait()

    async def _delete_confirmed(self) -> None:
        """Delete confirmed records in their own commits, so sending never waits on one."""
        while True:
            await self._deleting.wait()
            self._deleting = trio.Event()
            done, self.done = self.done, []
            if done:
                await self.store.outbox_delete(TOPIC, done)

    def _load(self) -> None:
        while True:
            rows = self.store.outbox_pending(TOPIC, self.batch, after=self.loaded)
            for seq, raw in rows:
                dest, payload = wire.unpack(raw)
                self.unconfirmed[seq] = [dest, payload, self.handed.pop(seq, NEVER)]
                self.loaded = seq
            if len(rows) < self.batch:
                return

    async def _send_due(self) -> None:
        """One pipelined XADD round trip per ``batch`` records due (new, or unconfirmed for
        ``resend_after``), the queued confirmations riding with the first."""
        now = self.clock()
        due = [e for e in self.unconfirmed.values() if e[2] + self.resend_after <= now]
        confirmations, self.confirmations = self.confirmations, []
        chunks = [due[i : i + self.batch] for i in range(0, len(due), self.batch)] or [[]]
        for n, chunk in enumerate(chunks):
            out = [(e[0], e[1]) for e in chunk] + (confirmations if n == 0 else [])
            if not out:
                return
            try:
                await self.broker.send(out)
            except Exception as exc:  # BrokerDown: keep the records, try again later
                log.debug("cluster outbox not sent: %s", exc)
                return
            for entry in chunk:
                if entry[2] != NEVER:
                    self.resent += 1
                entry[2] = now
            self.sent += len(chunk)
