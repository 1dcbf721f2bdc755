"""Secrets at rest: the data directory is 0700 and every file in it 0600 (LMDB's, the VAPID
key, the data lock), whatever the umask; an older, looser data directory is tightened."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chatd.client import ChatClient
from tests.conftest import PASSWORD, make_config, running


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(data: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(data.stat().st_mode)}
    for path in data.rglob("*"):
        found[str(path.relative_to(data))] = stat.S_IMODE(path.lstat().st_mode)
    return found


async def _run_once(data: Path, user: str = "alice") -> None:
    async with running(make_config(data)) as server:
        await ChatClient(server.url, user, PASSWORD).signup()


async def test_a_new_data_directory_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with umask(0o022):
        await _run_once(data)
    found = modes(data)
    assert {"data.mdb", "lock.mdb"} <= set(found), found
    assert found.pop(".") == 0o700
    for name, mode in found.items():
        wanted = 0o700 if (data / name).is_dir() else 0o600
        assert mode & 0o077 == 0 and mode & ~wanted == 0, (name, oct(mode))


async def test_a_loose_data_directory_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _run_once(data)
    data.chmod(0o755)
    for name in ("data.mdb", "lock.mdb"):
        (data / name).chmod(0o644)
    await _run_once(data, "bob")
    found = modes(data)
    assert found["."] == 0o700
    assert found["data.mdb"] == found["lock.mdb"] == 0o600
