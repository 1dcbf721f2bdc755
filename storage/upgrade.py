"""Upgrading a data directory written in an older on-disk format (``storage.env.FORMAT``).

A data directory records its format in ``meta`` (one written before formats were recorded is
format 1). :func:`upgrade` runs where a writer opens the directory (the server's
:class:`~storage.Store`, the offline commands' :class:`~storage.migrate.OfflineEnv`), so
under the data directory's lock, with nobody else holding the environment open. Each step of
:data:`STEPS` rewrites the whole environment into a new one beside it (``upgrade.tmp/``,
committed in chunks), then swaps the data file in: the old file is kept as
``data.mdb.format-<N>`` until the operator deletes it (docs/operations.md "Data format
upgrades"). A crash before the swap leaves the old file in place and the next open starts the
step again from scratch; the swap is one ``rename``.

Step 1 -> 2 (issue 19): ``messages``, ``inboxes`` and ``refs`` from msgpack records keyed
name \\0 suffix to the compact dupsort items of ``storage/messages.py``; every other
sub-database is copied as it is.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator

import lmdb

from storage.codec import int_key, unpack
from storage.env import DATABASES, DUPS, FORMAT, Env, FormatMismatch, Txn, format_of
from storage.messages import inbox_item, intern, message_item, ref_item
from storage.records import Message

log = logging.getLogger("chatd.storage")

#: Rows written per transaction while converting.
CHUNK = 20_000
TMP = "upgrade.tmp"


def data_format(path: str) -> int:
    """The format of the data directory at ``path`` (0: none there yet)."""
    if not os.path.exists(os.path.join(path, "data.mdb")):
        return 0
    env = lmdb.open(path, readonly=True, max_dbs=len(DATABASES) + 8, readahead=False)
    try:
        return format_of(env)
    finally:
        env.close()


def upgrade(path: str) -> int | None:
    """Bring the data directory at ``path`` to :data:`FORMAT`; the format it had if it was
    upgraded, else None. The caller holds the directory (no process has it open)."""
    found = data_format(path)
    if found in (0, FORMAT):
        return None
    if found > FORMAT:
        raise FormatMismatch(path, found)
    for version in range(found, FORMAT):
        _run_step(path, version)
    return found


def _run_step(path: str, version: int) -> None:
    tmp = os.path.join(path, TMP)
    shutil.rmtree(tmp, ignore_errors=True)  # a step a crash cut short starts again
    log.warning("data format %d -> %d: converting %s", version, version + 1, path)
    src = lmdb.open(path, readonly=True, max_dbs=len(DATABASES) + 8, readahead=False)
    try:
        used = (src.info()["last_pgno"] + 1) * src.stat()["psize"]
        dst = Env(  # offline, like storage/migrate.py: writemap off
            tmp, map_size=max(64 << 20, 2 * used), max_map_size=1 << 40, sync=False, writemap=False
        )
        try:
            STEPS[version](src, dst)
            dst.env.sync(True)
        finally:
            dst.close()
    finally:
        src.close()
    old = os.path.join(path, "data.mdb")
    os.replace(old, f"{old}.format-{version}")
    os.replace(os.path.join(tmp, "data.mdb"), old)
    shutil.rmtree(tmp, ignore_errors=True)
    log.warning(
        "data format %d -> %d: done; the old data file is kept as %s.format-%d (delete it "
        "once the server runs well)",
        version,
        version + 1,
        old,
        version,
    )


def _old_rows(env: lmdb.Environment, db: str) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of an old sub-database (none if it does not exist)."""
    with env.begin(buffers=False) as txn:
        try:
            handle = env.open_db(db.encode(), txn=txn, create=False)
        except lmdb.NotFoundError:
            return
        yield from txn.cursor(db=handle)


class _Writer:
    """Puts into the new environment, committed every :data:`CHUNK` rows."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.count = 0
        self.raw = env.env.begin(write=True)
        self.txn = Txn(self.raw, env.dbs)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        handle = self.env.dbs[db]
        if db in DUPS:
            if not self.raw.put(key, value, db=handle, append=True):
                self.raw.put(key, value, db=handle)
        else:
            self.raw.put(key, value, db=handle)
        self.count += 1
        if self.count % CHUNK == 0:
            self.raw.commit()
            self.raw = self.env.env.begin(write=True)
            self.txn.raw = self.raw

    def commit(self) -> None:
        self.raw.commit()


def _step_1_to_2(src: lmdb.Environment, dst: Env) -> None:
    out = _Writer(dst)
    numbers: dict[str, int] = {}

    def number(channel: str) -> int:
        if channel not in numbers:
            numbers[channel] = intern(out.txn, channel)
        return numbers[channel]

    def message(key: bytes, value: bytes) -> None:
        name, suffix = key[:-9], key[-8:]  # name \0 8-byte msg_id
        channel, msg_id, rec = name.decode(), int.from_bytes(suffix, "big"), unpack(value)
        item, spilled = message_item(Message(channel, msg_id, rec["from"], rec["body"], rec["ts"]))
        out.put("messages", name, item)
        if spilled is not None:
            out.put("bodies", int_key(channel, msg_id), spilled)

    def inbox(key: bytes, value: bytes) -> None:
        user, suffix = key[:-9], key[-8:]  # user \0 8-byte seq
        channel, msg_id = unpack(value)
        out.put("inboxes", user, inbox_item(int.from_bytes(suffix, "big"), number(channel), msg_id))

    def ref(key: bytes, value: bytes) -> None:
        user, _, suffix = key.partition(b"\x00")
        ack = unpack(value)
        out.put("refs", user, ref_item(suffix.decode(), number(ack["channel"]), ack))

    converters: dict[str, Callable[[bytes, bytes], None]] = {
        "messages": message,
        "inboxes": inbox,
        "refs": ref,
    }
    for db in DATABASES:
        if db == "meta":
            continue
        convert = converters.get(db)
        for key, value in _old_rows(src, db):
            if convert is None:
                out.put(db, key, value)
            else:
                convert(key, value)
    out.commit()


#: version -> the step that upgrades a data directory from it to the next.
STEPS: dict[int, Callable[[lmdb.Environment, Env], None]] = {1: _step_1_to_2}
