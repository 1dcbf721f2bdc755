"""Issue 16's storage guards, on real LMDB in tmp dirs: unsafe commit settings are refused
unless asked for, stale reader slots of killed processes are freed (at start-up, and when the
slots run out), and the writer runs each write transaction in one thread call at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from chatd.config import ConfigError, from_mapping
from storage.env import THREAD_POOL, Env, max_readers_for
from storage.errors import StorageUnavailable
from storage.store import Store

ROOT = Path(__file__).resolve().parent.parent


def test_sync_off_is_refused_without_unsafe_fast_commit() -> None:
    with pytest.raises(ConfigError, match=r"storage\.sync.*storage\.unsafe_fast_commit"):
        from_mapping({"storage": {"sync": False}})
    config = from_mapping({"storage": {"sync": False, "unsafe_fast_commit": True}})
    assert config.storage.sync is False
    assert from_mapping({}).storage.unsafe_fast_commit is False


def test_server_refuses_to_start_with_sync_off(tmp_path: Path) -> None:
    """The refusal is a config error like any other: exit 2, the key named, nothing opened."""
    conf = tmp_path / "chatd.toml"
    conf.write_text("[storage]\nsync = false\n")
    data = tmp_path / "data"
    argv = [sys.executable, "-m", "chatd", "serve", "--config", str(conf), "--data", str(data)]
    done = subprocess.run(
        [*argv, "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 2, done.stderr
    assert "storage.sync" in done.stderr and "storage.unsafe_fast_commit" in done.stderr
    assert not (data / "data.mdb").exists()


def test_unsafe_flags_are_reported(tmp_path: Path) -> None:
    safe = Env(str(tmp_path / "safe"), map_size=1 << 20, max_map_size=1 << 24, sync=True)
    fast = Env(str(tmp_path / "fast"), map_size=1 << 20, max_map_size=1 << 24, sync=False)
    try:
        assert safe.unsafe_flags() == []
        assert fast.unsafe_flags() == ["sync", "metasync"]
        # Dirty pages live in the map, not in heap copies LMDB keeps (storage/env.py).
        assert safe.env.flags()["writemap"] and not safe.env.flags()["map_async"]
    finally:
        safe.close()
        fast.close()


def test_max_readers_is_sized_for_the_thread_pool(tmp_path: Path) -> None:
    env = Env(str(tmp_path / "db"), map_size=1 << 20, max_map_size=1 << 24, sync=True)
    try:
        assert env.env.max_readers() == max_readers_for(THREAD_POOL)
        assert env.env.max_readers() >= 2 * THREAD_POOL
    finally:
        env.close()


def _leave_stale_readers(path: Path, readers: int, max_readers: int) -> None:
    """A child process opens ``readers`` read transactions and is killed with SIGKILL."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from storage.env import Env
        env = Env({str(path)!r}, map_size=1 << 20, max_map_size=1 << 24, sync=True,
                  max_readers={max_readers})
        held = [env.env.begin() for _ in range({readers})]
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert done.returncode == -9


def test_reader_check_at_start_up_frees_a_killed_process_slots(tmp_path: Path) -> None:
    """LMDB resets the reader table itself when the opener is alone (it gets the lock file
    exclusively), so stale slots survive a restart only while another process keeps the
    environment open (an ops command, a backup reader): that is the case checked here."""
    path = tmp_path / "db"
    holder_code = textwrap.dedent(
        f"""
        import sys
        from storage.env import Env
        env = Env({str(path)!r}, map_size=1 << 20, max_map_size=1 << 24, sync=True)
        print("open", flush=True)
        sys.stdin.read()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        _leave_stale_readers(path, readers=5, max_readers=max_readers_for(THREAD_POOL))
        env = Env(str(path), map_size=1 << 20, max_map_size=1 << 24, sync=True)
        try:
            assert env.stale_readers == 5
            assert env.reader_check() == 0
        finally:
            env.close()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()


def test_readers_full_runs_reader_check_and_retries_once(tmp_path: Path) -> None:
    path = tmp_path / "db"
    env = Env(str(path), map_size=1 << 20, max_map_size=1 << 24, sync=True, max_readers=8)
    try:
        assert env.stale_readers == 0
        # Opened after our start-up check: every slot is taken by a process that is now dead.
        _leave_stale_readers(path, readers=8, max_readers=8)
        with env.read() as txn:  # MDB_READERS_FULL, then reader_check, then the retry
            assert txn.get("accounts", b"nobody") is None
        # Slots held by live transactions are not stale: the retry fails, clearly.
        held = []
        with pytest.raises(StorageUnavailable, match="reader slots"):
            for _ in range(9):
                held.append(env.read())
        for reading in held:
            reading.__exit__(None, None, None)
    finally:
        env.close()


async def test_each_batch_runs_in_one_thread_call_one_at_a_time(tmp_path: Path) -> None:
    """Every op of a batch sees the same transaction in the same worker thread (never the
    event loop's), and no two batches are ever inside a write transaction at once."""
    store = Store(str(tmp_path / "db"), sync=False, max_batch=16)
    seen: list[tuple[int, int]] = []  # (thread, transaction) per op
    inside = [0, 0]  # ops running now, most at once

    def op(n: int) -> Any:
        def fn(tx: Any) -> int:
            inside[0] += 1
            inside[1] = max(inside[1], inside[0])
            seen.append((threading.get_ident(), id(tx)))
            inside[0] -= 1
            return n

        return fn

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        async with trio.open_nursery() as writers:
            for n in range(200):
                writers.start_soon(store.write, op(n))
        store.close()
    loop_thread = threading.get_ident()
    assert len(seen) == 200 and inside[1] == 1
    assert all(thread != loop_thread for thread, _ in seen)
    # Batches run one after another, so consecutive ops with the same transaction are a batch.
    for (thread, txn), (next_thread, next_txn) in zip(seen, seen[1:], strict=False):
        if txn == next_txn:
            assert thread == next_thread
    assert store.committer.batches < 200  # they were batched


FILL_UNTIL_FULL = """
import json, sys, trio
from storage import Store, StorageUnavailable

async def main(path, start):
    store = Store(path, map_size=1 << 20, sync=True)
    out = {"committed": 0, "errors": []}
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        out["read_back"] = sum(store.account(f"u{i}") is not None for i in range(start))
        for i in range(start, start + 10_000):
            try:
                await store.create_account(f"u{i}", {"pad": "x" * 3000})
            except StorageUnavailable as exc:
                out["errors"].append(str(exc))
                if len(out["errors"]) == 2:  # and again: the committer lives on
                    break
            else:
                out["committed"] += 1
        store.close()
    print(json.dumps(out))

trio.run(main, sys.argv[1], int(sys.argv[2]))
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 100 MiB tmpfs (root only): a disk that fills up."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs takes root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=100m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path, start: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", FILL_UNTIL_FULL, str(path), str(start)],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    # With writemap a write into a hole of the file on a full disk is SIGBUS (-7), not an error.
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_full_disk_fails_writes_cleanly_and_they_resume_once_there_is_room(
    small_disk: Path,
) -> None:
    """The map's disk is reserved before LMDB writes in it (storage/env.py ``Env.resize``):
    a full disk fails the write that needed room with StorageUnavailable, the process and
    what it committed live on, a restart on the full disk serves what is there, and writes
    resume once room is freed."""
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 80 << 20)  # 100 MiB disk: no room for a 64 MiB step
    data = small_disk / "data"
    first = _fill(data, 0)
    assert first["committed"] > 50  # the first 1 MiB map's worth
    assert len(first["errors"]) == 2 and all("disk full" in e for e in first["errors"])

    again = _fill(data, first["committed"])  # restarted on the still-full disk
    assert again["read_back"] == first["committed"]
    assert len(again["errors"]) == 2 and all("disk full" in e for e in again["errors"])

    filler.unlink()
    room = _fill(data, first["committed"] + again["committed"])
    assert room["read_back"] == first["committed"] + again["committed"]
    assert room["committed"] == 10_000 and room["errors"] == []  # 30 MB
