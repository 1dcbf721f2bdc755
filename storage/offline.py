"""Read-only views of a data directory, safe beside a running server: ``chatd stats`` and
``chatd backup``; and ``chatd compact``, which is not (it refuses beside a server).

Both open the LMDB environment read-only: a reader takes a slot in LMDB's reader table and
a snapshot, and never blocks or is blocked by the server's writer. The backup is LMDB's own
copy with compaction (``mdb_env_copy2`` with ``MDB_CP_COMPACT``): one read transaction's
consistent snapshot, free pages left out, written as ``data.mdb`` into a new directory that
is itself a complete data directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lmdb

from storage.env import DATABASES


def _open(path: str | Path) -> lmdb.Environment:
    if not (Path(path) / "data.mdb").is_file():
        raise FileNotFoundError(f"no chatd data in {path} (no data.mdb)")
    # map_size=0: the size the writer last committed (stats' map_bytes is the server's map,
    # not py-lmdb's 10 MiB default for this reader)
    return lmdb.open(
        str(path),
        readonly=True,
        lock=True,
        max_dbs=len(DATABASES) + 8,
        readahead=False,
        map_size=0,
    )


def stats(path: str | Path) -> dict[str, Any]:
    """Counts of what the data directory holds, and the map's size and use, in bytes."""
    env = _open(path)
    try:
        counts: dict[str, int] = {}
        with env.begin() as txn:
            for name in DATABASES:
                try:
                    db = env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    counts[name] = 0
                    continue
                counts[name] = txn.stat(db)["entries"]
        info, stat = env.info(), env.stat()
        # the outbox keeps one "last seq" key per topic; relay rows are bookkeeping
        return {
            "users": counts["accounts"],
            "groups": counts["groups"],
            "channels": counts["channels"],
            "messages": counts["messages"],
            "inbox_entries": counts["inboxes"],
            "tokens": counts["tokens"],
            "friendships": counts["friends"],
            "map_bytes": info["map_size"],
            "map_used_bytes": (info["last_pgno"] + 1) * stat["psize"],
            "file_bytes": disk_bytes(Path(path) / "data.mdb"),
        }
    finally:
        env.close()


def disk_bytes(data: Path) -> int:
    """The bytes of disk ``data.mdb`` takes: its allocated blocks (with writemap, the whole
    map's: the server reserves them, ``storage.env.Env.resize``)."""
    return data.stat().st_blocks * 512


def backup(path: str | Path, dest: str | Path) -> dict[str, Any]:
    """Copy the data directory at ``path`` to ``dest`` (a new or empty directory),
    compacted, from one consistent snapshot; returns the copy's :func:`stats`."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"backup destination {dest} exists and is not empty")
    env = _open(path)
    try:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        env.copy(str(dest), compact=True)
    finally:
        env.close()
    os.chmod(dest / "data.mdb", 0o600)
    return stats(dest)


def compact(path: str | Path) -> dict[str, Any]:
    """Rewrite the data directory at ``path`` compacted, in place: LMDB's copy with compaction
    (free pages left out, each B-tree rewritten in order, so pages full) into
    ``compact.tmp/`` beside it, then swapped in with one rename. Offline only: the caller
    holds the data directory's lock, and a process with the environment open (a server) makes
    this refuse. A crash before the swap leaves the old file whole (and a ``compact.tmp/``
    that the next run clears). Returns the data file's bytes before and after."""
    from storage.migrate import InUse, in_use  # the writer's guard, beside its lock

    path = Path(path)
    data = path / "data.mdb"
    if not data.is_file():
        raise FileNotFoundError(f"no chatd data in {path} (no data.mdb)")
    if in_use(str(path)):
        raise InUse(f"{path} is open in another process (stop its server first)")
    tmp = path / "compact.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    before = disk_bytes(data)
    env = _open(path)
    try:
        tmp.mkdir(mode=0o700)
        env.copy(str(tmp), compact=True)
    finally:
        env.close()
    os.chmod(tmp / "data.mdb", 0o600)
    os.replace(tmp / "data.mdb", data)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"file_bytes_before": before, "file_bytes_after": disk_bytes(data)}


def pages(path: str | Path) -> dict[str, dict[str, int]]:
    """Per sub-database, what ``mdb_stat`` shows: entries, depth, branch / leaf / overflow
    pages and their bytes (``bytes``); ``_env``: page size and the bytes of the map in use.
    Read-only, safe beside a server (``python -m bench storage`` reads it)."""
    env = _open(path)
    try:
        psize = env.stat()["psize"]
        out: dict[str, dict[str, int]] = {}
        with env.begin() as txn:
            for name in DATABASES:
                try:
                    db = env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    continue
                st = txn.stat(db)
                used = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
                out[name] = {
                    "entries": st["entries"],
                    "depth": st["depth"],
                    "branch_pages": st["branch_pages"],
                    "leaf_pages": st["leaf_pages"],
                    "overflow_pages": st["overflow_pages"],
                    "bytes": used * psize,
                }
        info = env.info()
        out["_env"] = {
            "psize": psize,
            "last_pgno": info["last_pgno"],
            "used_bytes": (info["last_pgno"] + 1) * psize,
        }
        return out
    finally:
        env.close()
