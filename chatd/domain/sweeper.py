"""The background sweep: purge expired tokens and send refs past their retention.

Every ``storage.sweep_interval`` seconds one pass walks the ``tokens`` and ``refs``
sub-databases in chunks of at most :data:`CHUNK` keys; each chunk is one write op run by the
committer in its thread (``Store.purge_chunk``), and the next chunk resumes from the key where
the last one stopped. The event loop never scans: it only awaits one op per chunk, so a store
with millions of refs costs many small ops interleaved with the sends, never one long one.

Tokens are purged once expired (``exp`` <= now); refs once their ack's ``ts`` is older than
``storage.ref_retention_hours``: after that, a resend of the ref is a new send (see
docs/protocol.md "Sending"). Stamps are wall-clock milliseconds, like every ``ts``.
"""

from __future__ import annotations

import logging

import trio

from chatd.domain.accounts import now_ms
from storage import StorageUnavailable, Store

log = logging.getLogger("chatd.sweeper")
CHUNK = 1000  # keys examined per write op


class Sweeper:
    def __init__(self, store: Store, *, interval: float, ref_retention_hours: float) -> None:
        self.store = store
        self.interval = interval
        self.ref_retention_ms = int(ref_retention_hours * 3_600_000)
        self.passes = 0  # completed passes
        self.purged = {"tokens": 0, "refs": 0}  # records deleted since start

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
        """One pass over both sub-databases."""
        now = now_ms()
        for db, cutoff in (("tokens", now), ("refs", now - self.ref_retention_ms)):
            start: bytes | None = b""
            deleted = 0
            while start is not None:
                start, n = await self.store.purge_chunk(db, cutoff, start, limit=CHUNK)
                deleted += n
            self.purged[db] += deleted
            if deleted:
                log.info("sweep: purged %d %s", deleted, db)
        self.passes += 1
