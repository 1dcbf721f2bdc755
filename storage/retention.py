"""Purging records that have outlived their use: expired tokens, send refs past retention.

A purge walks a whole sub-database, so it runs in chunks: each chunk is one write op (run by the
committer, in its thread) that examines at most ``limit`` keys from a resume key and deletes
the ones whose stamp is at or below the cutoff, then returns where the next chunk starts. The
event loop only sees one op per chunk, however large the database.
"""

from __future__ import annotations

from storage.codec import unpack
from storage.env import Txn

#: The record field holding each purgeable sub-database's stamp (ms since the epoch).
STAMPS = {"tokens": "exp", "refs": "ts"}


def purge_chunk(
    txn: Txn, db: str, *, cutoff: int, start: bytes, limit: int
) -> tuple[bytes | None, int]:
    """Delete records of ``db`` stamped at or before ``cutoff`` among the first ``limit`` keys
    from ``start`` (b"" = the first key); return (the next chunk's start or None at the end,
    how many were deleted)."""
    stamp = STAMPS[db]
    cursor = txn.cursor(db)
    positioned = cursor.set_range(start) if start else cursor.first()
    deleted = 0
    for _ in range(limit):
        if not positioned:
            return None, deleted
        record = unpack(cursor.value())
        if record.get(stamp, cutoff + 1) <= cutoff:  # a record with no stamp is kept
            cursor.delete()  # moves to the next key
            deleted += 1
            positioned = bool(cursor.key())
        else:
            positioned = cursor.next()
    return (cursor.key() if positioned else None), deleted
