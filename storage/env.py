"""The LMDB environment: sub-databases, read transactions, batched write transactions.

Everything here is synchronous. :meth:`Env.commit_batch` runs in a worker thread (called by the
committer); reads and :meth:`Env.grow` run on the event-loop thread. LMDB allows one reader
thread and one writer thread at once, and ``set_mapsize`` needs no open transaction in the
process: reads never await while a read transaction is open, so growing the map from the loop
thread between batches is safe.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lmdb

from storage.errors import StorageError, StorageUnavailable

DATABASES = (
    "accounts",  # user_id -> {display_name, created_at, pw, last_active}
    "tokens",  # sha256(token) -> {user, exp}
    "friends",  # user \0 other -> state
    "groups",  # channel_id -> group record
    "messages",  # channel \0 msg_id -> {from, body, ts}
    "inboxes",  # user \0 seq -> [channel, msg_id]
    "refs",  # user \0 ref -> ack
    "memberships",  # user \0 channel -> {read: msg_id}: the user's channels and read marks
)


class Txn:
    """A transaction with its sub-databases at hand: ``txn.get("accounts", key)``."""

    __slots__ = ("raw", "_dbs")

    def __init__(self, raw: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        self.raw = raw
        self._dbs = dbs

    def get(self, db: str, key: bytes) -> bytes | None:
        return self.raw.get(key, db=self._dbs[db])  # type: ignore[return-value]

    def put(self, db: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        return self.raw.put(key, value, db=self._dbs[db], overwrite=overwrite)

    def delete(self, db: str, key: bytes) -> bool:
        return self.raw.delete(key, db=self._dbs[db])

    def cursor(self, db: str) -> Any:
        """An ``lmdb.Cursor`` (typed Any: with ``buffers=False`` keys and values are bytes)."""
        return self.raw.cursor(db=self._dbs[db])


@dataclass
class Op:
    """One caller's write: ``fn(txn)`` runs inside the shared batch transaction; ``on_done(op)``
    runs on the event loop once the batch is committed (or failed)."""

    fn: Callable[[Txn], Any]
    on_done: Callable[[Op], None]
    result: Any = None
    error: BaseException | None = None


class MapFull(StorageError):
    """The batch did not fit in the map; grow it and retry."""


class Env:
    def __init__(self, path: str, *, map_size: int, max_map_size: int, sync: bool) -> None:
        os.makedirs(path, exist_ok=True)
        self.max_map_size = max_map_size
        try:
            self.env = lmdb.open(
                path,
                map_size=map_size,
                max_dbs=len(DATABASES) + 8,
                sync=sync,
                metasync=sync,
                readahead=False,
                max_readers=256,
            )
        except lmdb.Error as exc:
            raise StorageUnavailable(f"cannot open LMDB at {path}: {exc}") from exc
        # Keep whatever size a previous run grew the map to.
        self.env.set_mapsize(max(map_size, self.env.info()["map_size"]))
        with self.env.begin(write=True) as txn:
            self.dbs = {name: self.env.open_db(name.encode(), txn=txn) for name in DATABASES}

    @contextmanager
    def read(self) -> Iterator[Txn]:
        with self.env.begin(buffers=False) as raw:
            yield Txn(raw, self.dbs)

    def commit_batch(self, batch: Sequence[Op]) -> None:
        """Run every op in one write transaction, each in a nested transaction of its own.

        An op that raises is rolled back alone and gets the exception as its result; the rest
        commit together. Raises :class:`MapFull` (nothing applied) when the map must grow.
        """
        try:
            with self.env.begin(write=True) as parent:
                for op in batch:
                    child = self.env.begin(write=True, parent=parent)
                    try:
                        op.result = op.fn(Txn(child, self.dbs))
                        op.error = None
                    except lmdb.MapFullError:
                        child.abort()
                        raise
                    except (lmdb.BadValsizeError, lmdb.KeyExistsError) as exc:
                        child.abort()  # a bad key or value in this op only
                        op.result, op.error = None, StorageError(f"bad record: {exc}")
                    except lmdb.Error:
                        child.abort()
                        raise
                    except Exception as exc:  # the op's own error, handed back to its caller
                        child.abort()
                        op.result, op.error = None, exc
                    else:
                        child.commit()
        except lmdb.MapFullError as exc:
            raise MapFull(str(exc)) from exc
        except lmdb.Error as exc:
            error = StorageUnavailable(f"storage write failed: {exc}")
            for op in batch:
                op.result, op.error = None, error

    def grow(self) -> None:
        """Double the map size, up to the configured maximum."""
        size = self.env.info()["map_size"]
        if size >= self.max_map_size:
            raise StorageUnavailable(
                f"storage full: the LMDB map is at storage.max_map_size ({self.max_map_size} bytes)"
            )
        self.env.set_mapsize(min(size * 2, self.max_map_size))

    def close(self) -> None:
        self.env.close()
