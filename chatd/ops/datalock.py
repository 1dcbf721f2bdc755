"""Who owns a data directory: an exclusive ``flock`` on ``<data>/chatd.lock``.

The server holds it while it runs; so do the offline admin commands while they write. LMDB's
own lock file lets many processes in, but the server's writer caches ids and assumes it is the
only writer, so a second writer must never open the environment beside it: whoever cannot
take this lock talks to the running server's admin socket instead (``chatd/ops/admin.py``),
or refuses. The kernel drops the lock when the process dies, so a crash leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "chatd.lock"


class DataDirBusy(OSError):
    """Another process (a running server, an admin command) holds the data directory."""


class DataLock:
    def __init__(self, data: str | Path) -> None:
        self.path = Path(data) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DataLock:
        """Take the lock now or raise :class:`DataDirBusy` naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirBusy(
                f"data directory {self.path.parent} is in use by another chatd process "
                f"(pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DataLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def held(data: str | Path) -> bool:
    """Whether some process holds the data directory's lock right now."""
    try:
        with DataLock(data):
            return False
    except DataDirBusy:
        return True
