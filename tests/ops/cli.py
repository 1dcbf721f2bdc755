"""Running ``python -m chatd ...`` from a trio test (the server may be in this process)."""

from __future__ import annotations

import os
import subprocess
import sys

import trio

from chatd.client import Session


async def chatd(
    *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "chatd", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, **(env or {})},
        )


async def replay(session: Session) -> dict[tuple[str, int], str]:
    """Read a ``since`` session's replay up to its ``synced`` frame: (channel, msg_id) -> body."""
    got = {}
    with trio.fail_after(10):
        while (frame := await session.next_frame())["type"] != "synced":
            if frame["type"] == "msg":
                got[(frame["channel"], frame["msg_id"])] = frame["body"]
    return got
