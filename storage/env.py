"""The LMDB environment: sub-databases, read transactions, batched write transactions.

Everything here is synchronous. :meth:`Env.commit_batch` runs in the committer's dedicated
writer thread (``storage/writer.py``); reads and :meth:`Env.grow` run on the event-loop thread.
LMDB allows one reader thread and one writer thread at once, and ``set_mapsize`` needs no open
transaction in the process: reads never await while a read transaction is open, so growing the
map from the loop thread between batches is safe.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import lmdb

from storage.codec import after_prefix, from_ordered, int_suffix, prefix, str_suffix
from storage.errors import StorageError, StorageUnavailable

log = logging.getLogger("chatd.storage")

#: Threads that may hold a read transaction at once: the event loop's, the committer's writer
#: (its write transaction takes no reader slot, but a maintenance read might), and trio's
#: default worker-thread pool (40 threads) for anything run in ``trio.to_thread``.
THREAD_POOL = 40 + 2


def max_readers_for(threads: int) -> int:
    """LMDB reader slots for ``threads`` threads: each read transaction takes one slot while
    open (py-lmdb opens with MDB_NOTLS, so a slot follows the transaction, not the thread),
    and a process killed with open reads leaves its slots stale until :meth:`Env.reader_check`.
    Four per thread leaves room for those, and never fewer than LMDB's default 126."""
    return max(126, 4 * threads)


DATABASES = (
    "accounts",  # user_id -> {display_name, created_at, pw, last_active}
    "tokens",  # sha256(token) -> {user, exp}
    "friends",  # user \0 other -> state
    "groups",  # channel_id -> group record
    "messages",  # channel -> one item per message (dupsort); see storage/messages.py
    "bodies",  # channel \0 msg_id -> body, for the few messages too big for an item
    "inboxes",  # user -> items [seq, channel number, msg_id] (dupsort)
    "refs",  # user -> items [ref, channel number, msg_id, ts, inbox seq] (dupsort)
    "chanids",  # channel -> its number in this environment (4 bytes): inbox items and refs
    "channames",  # channel number -> channel
    "memberships",  # user \0 channel -> {read: msg_id}: the user's channels and read marks
    "channels",  # channel -> [last msg_id, its ts]: orders the channel list without messages
    "outbox",  # topic \0 seq -> record bytes (seq 0: the topic's last seq); see outbox.py
    "relay",  # channel \0 shard -> last msg_id sent to that shard; see relay.py
    "push",  # user \0 subscription id -> push subscription record; see push.py
    "meta",  # b"format" -> the on-disk format's version (FORMAT), as ASCII digits
)

#: Sub-databases that hold several sorted items under one key (LMDB ``MDB_DUPSORT``): each
#: key's items form a B-tree of their own, appended in order, so their pages fill up (a
#: B-tree keyed channel \0 msg_id, written a message at a time across many channels, keeps
#: its pages about half full). No ``dupfixed``: LMDB 0.9's compacting copy crashes on it.
DUPS: dict[str, dict[str, bool]] = {
    "messages": {"dupsort": True},
    "inboxes": {"dupsort": True},
    "refs": {"dupsort": True},
}

#: The on-disk format this code reads and writes. 1: msgpack records keyed name \0 suffix
#: (up to 2026-11); 2: the compact items of ``DUPS`` (issue 19). ``storage/migrate.py``
#: upgrades a data directory of an older format when it is opened for writing.
FORMAT = 2


class FormatMismatch(StorageError):
    """The environment holds another on-disk format than :data:`FORMAT` (``found``)."""

    def __init__(self, path: str, found: int) -> None:
        super().__init__(
            f"{path} holds data format {found}, this chatd reads format {FORMAT}"
            + (
                " (it is upgraded when a server or an offline command opens it)"
                if found < FORMAT
                else ""
            )
        )
        self.found = found


def format_of(env: lmdb.Environment) -> int:
    """The format of an open environment: ``meta``'s record, else 1 if it holds any named
    sub-database (made before formats were recorded), else 0 (empty: a new data directory)."""
    with env.begin() as txn:
        try:
            meta = env.open_db(b"meta", txn=txn, create=False)
        except lmdb.NotFoundError:
            return 1 if txn.cursor().first() else 0
        raw = txn.get(b"format", db=meta)
        return int(raw) if raw is not None else 1


class Txn:
    """A transaction with its sub-databases at hand: ``txn.get("accounts", key)``.

    Write transactions also carry the id counters (see :class:`Counters`) and ``dirty``: set
    by every write, so a batch knows whether an op that raised changed anything. Write only
    through the methods that set it (:meth:`put`, :meth:`delete`, :meth:`raw_writes`,
    :meth:`write_cursor`, :meth:`claim_id`, :meth:`channel_number`); a cursor from
    :meth:`cursor` is for reading (``tests/test_storage_batch.py`` checks both rules).
    """

    __slots__ = ("raw", "_dbs", "_counters", "dirty")

    def __init__(
        self, raw: lmdb.Transaction, dbs: dict[str, Any], counters: Counters | None = None
    ) -> None:
        self.raw = raw
        self._dbs = dbs
        self._counters = counters
        self.dirty = False

    def last_id(self, db: str, name: str) -> int:
        """The highest integer suffix stored under ``name`` in ``db`` (0 if none)."""
        if self._counters is not None:
            return self._counters.get(self, db, name)
        return self.scan_last_id(db, name)

    def claim_id(self, db: str, name: str) -> int:
        """``last_id + 1``, remembered as taken for the rest of this transaction."""
        assert self._counters is not None, "ids are claimed in write transactions only"
        self.dirty = True
        return self._counters.claim(self, db, name)

    def scan(self, db: str, name: str) -> Iterator[tuple[str, bytes]]:
        """(suffix, value) of every key under ``name`` in ``db``, in key order."""
        start = prefix(name)
        cursor = self.cursor(db)
        if cursor.set_range(start):
            for key, value in cursor:
                if not key.startswith(start):
                    break
                yield str_suffix(key), value

    def scan_last_id(self, db: str, name: str) -> int:
        """The last id under ``name``: of a dupsort sub-database, its last item's leading
        number (a message's msg_id, an inbox item's seq); of ``channames``, its last key."""
        cursor = self.cursor(db)
        if db in ("messages", "inboxes"):  # both items begin with an ordered() id
            if cursor.set_key(name.encode()) and cursor.last_dup():
                return from_ordered(cursor.value())[0]
            return 0
        if db == "channames":
            return int.from_bytes(cursor.key(), "big") if cursor.last() else 0
        ok = cursor.prev() if cursor.set_range(after_prefix(name)) else cursor.last()
        if ok and cursor.key().startswith(prefix(name)):
            return int_suffix(cursor.key())
        return 0

    def channel_number(self, channel: str) -> int:
        """``channel``'s number in this environment, given one now if it has none (write
        transactions only; undone with the run of the batch that gave it)."""
        assert self._counters is not None, "numbers are given in write transactions only"
        return self._counters.intern(self, channel)  # a new number is put: dirty then

    def get(self, db: str, key: bytes) -> bytes | None:
        return self.raw.get(key, db=self._dbs[db])  # type: ignore[return-value]

    def put(self, db: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        """Store ``value`` under ``key``; False (nothing changed) if ``overwrite`` is False
        and the key exists."""
        if self.raw.put(key, value, db=self._dbs[db], overwrite=overwrite):
            self.dirty = True
            return True
        return False

    def delete(self, db: str, key: bytes) -> bool:
        if self.raw.delete(key, db=self._dbs[db]):
            self.dirty = True
            return True
        return False

    def raw_writes(self) -> lmdb.Transaction:
        """The ``lmdb.Transaction``, for a loop of ``raw.put(..., db=txn.handle(db))`` on a
        hot path: counted as written from here on."""
        self.dirty = True
        return self.raw

    def handle(self, db: str) -> Any:
        """The ``lmdb._Database`` of ``db``, for the loops of :meth:`raw_writes`."""
        return self._dbs[db]

    def cursor(self, db: str) -> Any:
        """An ``lmdb.Cursor`` to read with (typed Any: with ``buffers=False`` keys and values
        are bytes). To delete or put through a cursor, take :meth:`write_cursor`."""
        return self.raw.cursor(db=self._dbs[db])

    def write_cursor(self, db: str) -> Any:
        """A cursor that may delete or put: counted as written from here on."""
        self.dirty = True
        return self.raw.cursor(db=self._dbs[db])


class _Reading(Txn):
    """A read-only :class:`Txn` that ends (releases its snapshot) when its ``with`` block does."""

    __slots__ = ()

    def __enter__(self) -> Txn:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.raw.abort()  # read-only: nothing to commit, and it frees the reader slot alike


class Counters:
    """The last msg_id of each channel and inbox seq of each user, cached for the writer.

    The truth stays in the keys (the last key under a prefix); this saves the cursor seek per
    message. Only the committer's thread touches it. Ids claimed in a batch are ``pending``
    until the batch commits; an aborted run of a batch drops them all. The cache is simply
    cleared when it grows past ``limit`` entries: 25,000 entries take ~5 MB (~206 B each), and
    a miss costs ~0.8 us more than a hit (one cursor seek: 2.1-2.3 against 1.3-1.6 us per inbox
    append, bench/README.md "Soak and memory"), so a shard with more active keys than that
    pays ~1% of a message's CPU instead of holding ~41 MB as the old 200,000 did.
    """

    __slots__ = ("committed", "pending", "limit")

    def __init__(self, limit: int = 25_000) -> None:
        self.committed: dict[tuple[str, str], int] = {}
        self.pending: dict[tuple[str, str], int] = {}
        self.limit = limit

    def get(self, txn: Txn, db: str, name: str) -> int:
        key = (db, name)
        value = self.pending.get(key)
        if value is None:
            value = self.committed.get(key)
            if value is None:
                value = txn.scan_last_id(db, name)
        return value

    def claim(self, txn: Txn, db: str, name: str) -> int:
        value = self.get(txn, db, name) + 1
        self.pending[(db, name)] = value
        return value

    def intern(self, txn: Txn, channel: str) -> int:
        """The number of ``channel`` (``chanids``), given the next free one (``channames``'
        last + 1) if it has none; a new number is pending like a claimed id."""
        key = ("chanids", channel)
        number = self.pending.get(key) or self.committed.get(key)
        if number is not None:
            return number
        raw = txn.get("chanids", channel.encode())
        if raw is not None:
            number = int.from_bytes(raw, "big")
            self.committed[key] = number  # stored by a committed batch (this one's are pending)
            return number
        txn.dirty = True
        number = self.claim(txn, "channames", "")
        if number > 0xFFFFFFFF:
            raise StorageError("storage full: 2**32 channel numbers given")
        packed = number.to_bytes(4, "big")
        txn.put("chanids", channel.encode(), packed)
        txn.put("channames", packed, channel.encode())
        self.pending[key] = number
        return number

    def batch_done(self, ok: bool) -> None:
        if ok:
            if len(self.committed) + len(self.pending) > self.limit:
                self.committed.clear()
            self.committed.update(self.pending)
        self.pending.clear()


@dataclass(slots=True)
class Op:
    """One caller's write: ``fn(tx)`` runs inside the shared batch transaction (``tx`` is the
    environment's view of it, see :class:`Env`); ``on_done(result, error)`` runs on the event
    loop once the batch is committed (or failed)."""

    fn: Callable[[Any], Any]
    on_done: Callable[[Any, BaseException | None], None]
    result: Any = None
    error: BaseException | None = None


def grow_step(size: int) -> int:
    """How much a map of ``size`` bytes grows when full: a quarter, between 64 MiB and 1 GiB.
    With writemap the map's disk is reserved, so this bounds the disk taken ahead of use."""
    return min(max(size // 4, 64 << 20), 1 << 30)


class MapFull(StorageError):
    """The batch did not fit in the map; grow it and retry."""


def private(path: str, mode: int) -> None:
    """Take group and other permissions off ``path`` (its owner's stay as they are, within
    ``mode``); nothing if it is missing or not ours to change."""
    try:
        current = os.stat(path).st_mode & 0o777
        if current & ~mode:
            os.chmod(path, current & mode)
    except OSError:
        pass


def private_dir(path: str) -> None:
    """The data directory, created 0700 (and tightened to it if it exists): it holds every
    account's password hash, token digests and message bodies."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    private(path, 0o700)


class Env:
    """The environment. Write ops get ``view(txn)`` (the :class:`Txn` itself if ``view`` is
    None): the store passes its typed ``WriteTx``, built once per run of a batch."""

    def __init__(
        self,
        path: str,
        *,
        map_size: int,
        max_map_size: int,
        sync: bool,
        view: Callable[[Txn], Any] | None = None,
        max_readers: int = max_readers_for(THREAD_POOL),
        writemap: bool = True,
    ) -> None:
        private_dir(path)
        self.max_map_size = max_map_size
        self.view = view
        self.writemap = writemap
        self.data_file = os.path.join(path, "data.mdb")
        try:
            self.env = lmdb.open(
                path,
                map_size=map_size,
                max_dbs=len(DATABASES) + 8,
                sync=sync,
                metasync=sync,
                readahead=False,
                max_readers=max_readers,
                # Dirty pages are written in the map itself, not in malloc'd copies: LMDB
                # keeps the copies of its largest transaction until the environment closes
                # (14.8 MiB after batches of 500 messages, against 0.3 with writemap), so
                # the heap would grow with the biggest batch a backlog ever made. Still one
                # msync per commit (sync on), and no nested transactions (commit_batch).
                # The map's disk is reserved before LMDB writes in it: see resize().
                writemap=writemap,
                mode=0o600,  # data.mdb and lock.mdb: tokens' digests, password hashes, bodies
            )
        except lmdb.Error as exc:
            raise StorageUnavailable(f"cannot open LMDB at {path}: {exc}") from exc
        for name in ("data.mdb", "lock.mdb"):  # made by an older version, or another umask
            private(os.path.join(path, name), 0o600)
        # A process killed with read transactions open (kill -9, OOM) leaves their reader
        # slots taken; free them before they add up to MDB_READERS_FULL.
        self.stale_readers = self.reader_check()
        if self.unsafe_flags():  # the config refuses this without storage.unsafe_fast_commit
            log.warning(
                "LMDB unsafe flags %s: a crash may lose acknowledged writes", self.unsafe_flags()
            )
        # What is in use and a quarter more (so a compacted file stays small), at least
        # storage.map_size, reserved on disk before any write.
        used = self.usage()[1]
        try:
            self.resize(max(map_size, min(used + used // 4, max_map_size)))
        except StorageUnavailable as exc:
            # A full disk: serve what is there. Every page in use is on disk already, and
            # writes that need more get StorageUnavailable from grow() until there is room.
            log.warning("%s; the map stays at the %d bytes in use", exc, used)
            self.env.set_mapsize(used)
        found = format_of(self.env)
        if found not in (0, FORMAT):
            self.env.close()
            raise FormatMismatch(path, found)
        try:
            with self.env.begin(write=True) as txn:
                self.dbs = {
                    name: self.env.open_db(name.encode(), txn=txn, **DUPS.get(name, {}))
                    for name in DATABASES
                }
                if found == 0:
                    txn.put(b"format", str(FORMAT).encode(), db=self.dbs["meta"])
        except lmdb.MapFullError as exc:  # a new data directory on a full disk
            self.env.close()
            raise StorageUnavailable(f"disk full: cannot set up LMDB at {path}") from exc
        self.counters = Counters()

    def read(self) -> _Reading:
        """A read-only transaction, for ``with env.read() as txn:``.

        A plain class, not ``@contextmanager``: its generator cost about a third of a small
        read, and the send path makes two reads per message."""
        try:
            raw = self.env.begin(buffers=False)
        except lmdb.ReadersFullError:
            # Every slot is taken: some may be stale (a dead process's); free those, retry once.
            self.reader_check()
            try:
                raw = self.env.begin(buffers=False)
            except lmdb.ReadersFullError as exc:
                raise StorageUnavailable(f"LMDB reader slots exhausted: {exc}") from exc
        return _Reading(raw, self.dbs)

    def reader_check(self) -> int:
        """Free the reader slots of dead processes (LMDB's ``mdb_reader_check``); how many."""
        cleared = int(self.env.reader_check())
        if cleared:
            log.warning("LMDB: freed %d stale reader slot(s) of dead processes", cleared)
        return cleared

    def unsafe_flags(self) -> list[str]:
        """The LMDB flags in effect that let a crash lose committed transactions (``writemap``
        alone does not: with sync on, each commit msyncs the map before its meta page)."""
        flags = self.env.flags()
        unsafe = [name for name in ("sync", "metasync") if not flags[name]]
        return unsafe + (["map_async"] if flags["map_async"] else [])

    def commit_batch(self, batch: Sequence[Op]) -> None:
        """Run every op in one write transaction; an op that raises is left out alone.

        Every op runs straight in the batch's transaction (no nested transactions: LMDB
        refuses them with ``writemap``, see :meth:`__init__`). An op that raises before
        writing anything (``Txn.dirty`` unset: the usual "not found", "forbidden" or
        "taken" check) gets its exception as its result and the batch goes on. One that
        raises after writing cannot be undone alone: the run is aborted and the batch runs
        again without it, so an op's function may run more than once before its batch
        commits (as it already may when the map must grow): it reads and writes its
        transaction and nothing else. Raises :class:`MapFull` (nothing applied) when the map
        must grow.
        """
        left_out: set[int] = set()
        try:
            while (index := self._run(batch, left_out)) is not None:
                left_out.add(index)
                log.warning(
                    "a write op raised after writing (%r); its batch of %d ops runs again "
                    "without it",
                    batch[index].error,
                    len(batch),
                )
        except lmdb.MapFullError as exc:
            raise MapFull(str(exc)) from exc
        except lmdb.Error as exc:
            error = StorageUnavailable(f"storage write failed: {exc}")
            for op in batch:
                op.result, op.error = None, error

    def _run(self, batch: Sequence[Op], left_out: set[int]) -> int | None:
        """One run of ``batch`` but ``left_out``: None once committed, or (the run aborted)
        the index of an op that raised after writing."""
        counters = self.counters
        raw = self.env.begin(write=True)
        committed = False
        try:
            txn = Txn(raw, self.dbs, counters)
            tx = txn if self.view is None else self.view(txn)
            for index, op in enumerate(batch):
                if index in left_out:
                    continue
                txn.dirty = False
                try:
                    op.result, op.error = op.fn(tx), None
                except (lmdb.BadValsizeError, lmdb.KeyExistsError) as exc:
                    op.result, op.error = None, StorageError(f"bad record: {exc}")
                except lmdb.Error:
                    raise  # the transaction is unusable (map full, I/O error): the batch fails
                except Exception as exc:  # the op's own error, handed back to its caller
                    op.result, op.error = None, exc
                else:
                    continue
                if txn.dirty:
                    return index
            raw.commit()
            committed = True
        finally:
            if not committed:
                raw.abort()
            counters.batch_done(committed)
        return None

    def grow(self) -> None:
        """Grow the map by one step (:func:`grow_step`), up to the configured maximum."""
        size = self.env.info()["map_size"]
        if size >= self.max_map_size:
            raise StorageUnavailable(
                f"storage full: the LMDB map is at storage.max_map_size ({self.max_map_size} bytes)"
            )
        self.resize(min(size + grow_step(size), self.max_map_size))

    def resize(self, size: int) -> None:
        """Make the map ``size`` bytes (never below what is in use); with writemap, reserve
        its disk first.

        With writemap a commit writes its pages through the memory map. A page in a hole of
        the file (the part of the map never written) gets its disk block when the page is
        first written, and on a full disk the kernel answers that with SIGBUS: the process
        dies instead of the commit failing. So the whole map is allocated on disk
        (``posix_fallocate``) before LMDB may write in it; a full disk then fails the
        reservation, and the write that needed the room gets ``StorageUnavailable``.
        """
        if self.writemap:
            try:
                fd = os.open(self.data_file, os.O_RDWR)
                try:
                    os.posix_fallocate(fd, 0, size)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StorageUnavailable(
                    f"disk full: cannot reserve {size} bytes for the LMDB map in "
                    f"{self.data_file}: {exc.strerror}"
                ) from exc
        self.env.set_mapsize(size)

    def usage(self) -> tuple[int, int]:
        """(map size, bytes of it in use), from the last committed transaction."""
        info = self.env.info()
        return info["map_size"], (info["last_pgno"] + 1) * self.env.stat()["psize"]

    def close(self) -> None:
        self.env.close()
