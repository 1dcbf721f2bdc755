"""The background sweep: purge expired tokens, send refs past their retention and, with
``storage.history_retention_days`` set, messages and inbox entries past it.

Every ``storage.sweep_interval`` seconds one pass walks the ``tokens`` sub-database, ``refs``
if its last walk is :data:`REFS_EVERY` old, and ``messages`` and ``inboxes`` under history
retention, in chunks of at most :data:`CHUNK` records; each chunk is one write op run by the
committer in its thread (``Store.purge_chunk``), and the next chunk resumes from the key where
the last one stopped. The event loop never scans: it only awaits one op per chunk, so a store
with millions of refs costs many small ops interleaved with the sends, never one long one.

Tokens are purged once expired (``exp`` <= now); refs once their ack's ``ts`` is older than
``storage.ref_retention_hours``: after that, a resend of the ref is a new send (see
docs/protocol.md "Sending"). Messages once their ``ts`` is older than
``storage.history_retention_days``, then each inbox's leading entries whose message is gone or
that old (docs/protocol.md "Retention": what a device offline longer than that gets). Stamps
are wall-clock milliseconds, like every ``ts``; the clock is ``now`` (tests pass a fake one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from chatd.domain.accounts import now_ms
from storage import StorageUnavailable, Store

log = logging.getLogger("chatd.sweeper")
CHUNK = 1000  # records examined per write op
#: Seconds between two walks of ``refs``. A walk reads every ref (its ts is its message's: one
#: lookup each, ~3.4 us; bench/README.md "Soak and memory"), so with 10M refs a walk every
#: 5 minutes would take ~11% of a core; once an hour ~1%, and a ref outlives its window by at
#: most this much.
REFS_EVERY = 3600.0


class Sweeper:
    def __init__(
        self,
        store: Store,
        *,
        interval: float,
        ref_retention_hours: float,
        history_retention_days: float = 0.0,
        now: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.interval = interval
        self.ref_retention_ms = int(ref_retention_hours * 3_600_000)
        self.history_retention_ms = int(history_retention_days * 86_400_000)  # 0: forever
        self.now = now
        self.passes = 0  # completed passes
        self.ref_walks = 0  # of which walked refs
        self.last_refs_walk = -float("inf")  # trio time the last refs walk began
        # records deleted since start
        self.purged = {"tokens": 0, "refs": 0, "messages": 0, "inboxes": 0}

    async def run(self) -> None:
        """Sweep every ``interval`` seconds until cancelled. A failed pass is logged and the
        next one runs on time: this task must never end the server."""
        while True:
            await trio.sleep(self.interval)
            try:
                await self.sweep()
            except StorageUnavailable as exc:
                log.warning("sweep skipped: %s", exc)
            except Exception:  # last resort for this task: a bug here must not stop the server
                log.exception("sweep failed")

    async def sweep(self) -> None:
        """One pass: tokens, refs, then (under history retention) messages and inboxes."""
        now = self.now()
        passes = [("tokens", now)]
        walk_refs = trio.current_time() - self.last_refs_walk >= REFS_EVERY
        if walk_refs:
            self.last_refs_walk = trio.current_time()
            passes.append(("refs", now - self.ref_retention_ms))
        if self.history_retention_ms:
            cutoff = now - self.history_retention_ms
            passes += [("messages", cutoff), ("inboxes", cutoff)]
        for db, cutoff in passes:
            start: bytes | None = b""
            deleted = 0
            while start is not None:
                start, n = await self.store.purge_chunk(db, cutoff, start, limit=CHUNK)
                deleted += n
            self.purged[db] += deleted
            if deleted:
                log.info("sweep: purged %d %s", deleted, db)
        self.ref_walks += walk_refs
        self.passes += 1
