"""Offline data moves between environments: the raw primitives a re-shard is made of.

A move (``chatd reshard``, see docs/cluster.md "Re-sharding") runs while no server has any of
the environments open. It opens each one read-write (:class:`OfflineEnv`, which refuses an
environment another process holds open), reads rows by key prefix, and copies or deletes
them, each step one synced transaction. Which rows belong together and where they go is the
caller's business: nothing here knows a user from a channel.

Copy first, commit, then delete from the source in a later transaction: a crash between the
two leaves the rows in both places, and running the step again copies the same keys (a put of
an equal value) and then deletes. So a caller whose steps are key-for-key copies gets a move
that may be interrupted anywhere and run again to the same end.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

import lmdb

from storage.codec import after_prefix, from_ordered, int_key, ordered, prefix
from storage.env import DATABASES, DUPS, Env, Txn
from storage.errors import StorageUnavailable
from storage.messages import (
    SPILLED,
    channel_name,
    find_message,
    inbox_item,
    intern,
    parse_inbox,
    parse_ref,
    ref_prefix,
)
from storage.upgrade import upgrade

T = TypeVar("T")

#: The map an offline environment starts with; a step that does not fit doubles it.
MAP_SIZE = 64 << 20
MAX_MAP_SIZE = 1 << 40


class InUse(StorageUnavailable):
    """Another process has the environment open (a server still running on it)."""


def in_use(path: str) -> bool:
    """Whether a process holds the LMDB environment at ``path`` open.

    LMDB keeps a shared POSIX lock on the first byte of ``lock.mdb`` for as long as a process
    has the environment open (it takes it exclusively only while it is alone, at open). So if
    an exclusive lock on that byte cannot be had, someone has it open. Call this before this
    process opens the environment: POSIX locks of one process never conflict with each other.
    """
    lock = os.path.join(path, "lock.mdb")
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return True
        raise
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
        return False
    finally:
        os.close(fd)


class OfflineEnv:
    """One environment opened for a move: synced write transactions run as functions.

    ``create``: an environment that does not exist yet is made (a new shard); otherwise a
    missing one is an error (its data would be lost from view)."""

    def __init__(self, path: str, *, create: bool = False) -> None:
        self.path = path
        if not os.path.exists(os.path.join(path, "data.mdb")) and not create:
            raise StorageUnavailable(f"no LMDB environment at {path}")
        if in_use(path):
            raise InUse(f"{path} is open in another process (stop its server first)")
        upgrade(path)  # an older on-disk format is converted first (storage/upgrade.py)
        # Offline, the servers stopped: no heap to keep small, and no disk reserved ahead
        # (see Env.resize), so writemap stays off here.
        self.env = Env(
            path, map_size=MAP_SIZE, max_map_size=MAX_MAP_SIZE, sync=True, writemap=False
        )

    @property
    def databases(self) -> tuple[str, ...]:
        """The sub-databases this version of storage has."""
        return DATABASES

    def read(self) -> AbstractContextManager[Txn]:
        """A read-only transaction, for ``with env.read() as txn:``."""
        return self.env.read()

    def write(self, fn: Callable[[Txn], T]) -> T:
        """Run ``fn`` in one write transaction and commit it (synced); its result. If it does
        not fit, the map grows and ``fn`` runs again from the start (so it must only read and
        write its transaction). An exception from ``fn`` commits nothing."""
        while True:
            raw = self.env.env.begin(write=True)
            try:
                result = fn(Txn(raw, self.env.dbs))
                raw.commit()
                return result
            except lmdb.MapFullError:
                raw.abort()
                self.env.grow()
            except BaseException:
                raw.abort()
                raise

    def close(self) -> None:
        self.env.close()


# -- reading rows


def rows(txn: Txn, db: str, name: str) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every row of ``db`` whose key is ``name`` \\0 suffix, in key order; of
    a dupsort sub-database (``messages``, ``inboxes``, ``refs``), (``name``, item) of every
    item under the key ``name``."""
    cursor = txn.cursor(db)
    if db in DUPS:
        key = name.encode()
        if cursor.set_key(key):
            for item in cursor.iternext_dup():
                yield key, item
        return
    start = prefix(name)
    if cursor.set_range(start):
        for key, value in cursor:
            if not key.startswith(start):
                break
            yield key, value


def all_rows(txn: Txn, db: str) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every row of ``db``, in key order (every item of a dupsort one)."""
    cursor = txn.cursor(db)
    if cursor.first():
        yield from cursor


def names(txn: Txn, db: str) -> Iterator[str]:
    """The distinct key prefixes (``name`` of ``name`` \\0 suffix) of ``db``, one seek each;
    a key with no separator counts as a name of its own (``accounts``, ``groups``, and every
    key of a dupsort sub-database)."""
    cursor = txn.cursor(db)
    ok = cursor.first()
    while ok:
        key: bytes = cursor.key()
        name, sep, _ = key.partition(b"\x00")
        yield name.decode()
        if db in DUPS:
            ok = cursor.next_nodup()
        else:
            ok = cursor.set_range(after_prefix(name.decode())) if sep else cursor.next()


def inbox_messages(txn: Txn, user: str) -> Iterator[tuple[str, int]]:
    """(channel, msg_id) of every entry of ``user``'s inbox, in seq order."""
    names: dict[int, str] = {}
    for _, item in rows(txn, "inboxes", user):
        _, number, msg_id = parse_inbox(item)
        if number not in names:
            names[number] = channel_name(txn, number)
        yield names[number], msg_id


# -- writing rows


def copy_rows(
    src: Txn, dst: Txn, db: str, name: str, *, overwrite: bool = True, db_to: str | None = None
) -> int:
    """Copy every row of ``db`` under ``name`` from ``src`` to ``dst`` (into ``db_to`` if
    given); how many were written (with ``overwrite=False`` a key already in ``dst`` is kept
    and not counted). Items of a dupsort sub-database are added if ``dst`` lacks them: a
    message with its spilled body, inbox entries and refs with their channel's number in
    ``dst`` (numbers are each environment's own)."""
    if db in DUPS:
        return sum(_copy_item(src, dst, db, key, item) for key, item in rows(src, db, name))
    put, handle = dst.raw_writes().put, dst.handle(db_to or db)
    return sum(
        bool(put(key, value, db=handle, overwrite=overwrite)) for key, value in rows(src, db, name)
    )


def _copy_item(src: Txn, dst: Txn, db: str, key: bytes, item: bytes) -> bool:
    if db == "messages":
        msg_id, at = from_ordered(item)
        channel = key.decode()
        if find_message(dst, channel, msg_id) is not None:
            return False
        if item[at + 6] & SPILLED:
            copy_row(src, dst, "bodies", int_key(channel, msg_id))
    elif db == "inboxes":
        seq, number, msg_id = parse_inbox(item)
        item = inbox_item(seq, intern(dst, channel_name(src, number)), msg_id)
    else:  # refs
        ref, number, msg_id, inbox = parse_ref(item)
        there = intern(dst, channel_name(src, number))
        item = ref_prefix(ref) + ordered(there) + ordered(msg_id) + ordered(inbox)
    return bool(dst.raw_writes().put(key, item, db=dst.handle(db), dupdata=False))


def copy_message(src: Txn, dst: Txn, channel: str, msg_id: int) -> bool:
    """Copy message (``channel``, ``msg_id``) if ``src`` has it and ``dst`` does not."""
    cursor = find_message(src, channel, msg_id)
    return cursor is not None and _copy_item(src, dst, "messages", channel.encode(), cursor.value())


def copy_row(src: Txn, dst: Txn, db: str, key: bytes, *, overwrite: bool = True) -> bool:
    """Copy the row ``key`` of ``db``, if ``src`` has it; whether it was written."""
    value = src.get(db, key)
    return value is not None and dst.put(db, key, value, overwrite=overwrite)


def delete_rows(txn: Txn, db: str, name: str) -> int:
    """Delete every row of ``db`` under ``name`` (every item of it, in a dupsort one; a
    message's spilled body too); how many there were."""
    found = list(rows(txn, db, name))
    if db in DUPS:
        if db == "messages":
            for _, item in found:
                msg_id, at = from_ordered(item)
                if item[at + 6] & SPILLED:
                    txn.delete("bodies", int_key(name, msg_id))
        if found:
            txn.delete(db, name.encode())  # the key and all its items
        return len(found)
    for key, _ in found:
        txn.delete(db, key)
    return len(found)


def keyed(txn: Txn, db: str) -> Iterator[tuple[str, str, bytes]]:
    """(name, suffix, key) of every ``name`` \\0 ``suffix`` row of ``db`` whose suffix is
    text (``relay``, ``friends``, ``refs``, ...), in key order."""
    for key, _ in all_rows(txn, db):
        name, sep, suffix = key.partition(b"\x00")
        if sep:
            yield name.decode(), suffix.decode(errors="replace"), key
