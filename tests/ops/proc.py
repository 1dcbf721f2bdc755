"""A real ``python -m chatd serve`` in a subprocess, for the operations tests: started with
a config file, its stderr collected line by line, stopped by a signal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio

LISTENING = re.compile(rb"chatd listening on (http://\S+)")
TEST_CONFIG = """
[server]
listen = "127.0.0.1:0"
drain_timeout = {drain}

[limits]
send_rate = 10000.0
send_burst = 10000
login_rate = 10000.0
login_burst = 10000
signup_rate = 10000.0
signup_burst = 10000
max_sessions_per_user = 50

[security]
argon2_memory_kib = 7168
argon2_time_cost = 5
"""


def write_config(path: Path, drain: float = 4.0, extra: str = "") -> Path:
    path.write_text(TEST_CONFIG.format(drain=drain) + extra)
    return path


class ServerProc:
    """``async with ServerProc(...) as p:`` starts the server and waits for its listening
    line; the block's end SIGTERMs it (if still running) and waits for the exit."""

    def __init__(
        self, config: Path, data: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.argv = [sys.executable, "-m", "chatd", "serve", "--config", str(config)]
        self.argv += ["--data", str(data), *args]
        self.env = {**os.environ, **(env or {})}
        self.url = ""
        self.stderr = bytearray()
        self.proc: trio.Process | None = None
        self.returncode: int | None = None

    async def __aenter__(self) -> ServerProc:
        self._nursery_mgr = trio.open_nursery()
        nursery = await self._nursery_mgr.__aenter__()
        self.proc = await trio.lowlevel.open_process(
            self.argv, stderr=subprocess.PIPE, env=self.env
        )
        listening = trio.Event()
        nursery.start_soon(self._collect, listening)
        with trio.fail_after(15):
            await listening.wait()
        if not self.url:
            raise AssertionError(f"chatd did not start:\n{self.stderr.decode()}")
        return self

    async def _collect(self, listening: trio.Event) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async with self.proc.stderr:
            while chunk := await self.proc.stderr.receive_some(65536):
                self.stderr += chunk
                m = LISTENING.search(self.stderr)
                if m and not listening.is_set():
                    self.url = m.group(1).decode()
                    listening.set()
        listening.set()

    async def stop(self, sig: int | None = signal.SIGTERM) -> int:
        """Send ``sig`` (None: it was sent already) and wait for the exit status."""
        assert self.proc is not None
        if self.proc.returncode is None and sig is not None:
            self.proc.send_signal(sig)
        with trio.fail_after(20):
            self.returncode = await self.proc.wait()
        return self.returncode

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.proc is not None and self.proc.returncode is None:
                await self.stop()
        finally:
            if self.proc is not None and self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            await self._nursery_mgr.__aexit__(None, None, None)

    def log(self) -> str:
        return self.stderr.decode(errors="replace")
