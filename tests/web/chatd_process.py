"""A chatd server as a child process (``python -m chatd serve``), the way an operator runs it,
so a browser test can stop it with SIGTERM and start it again on the same port and data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

READY = b"chatd listening on "
CONFIG = """\
[limits]
signup_rate = 1000.0
signup_burst = 1000
login_rate = 1000.0
login_burst = 1000
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChatdProcess:
    """``start()`` returns once the server logs that it accepts connections; ``stop()`` sends
    SIGTERM and waits for the exit (0, the contract's drain)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.config = root / "chatd.toml"
        self.config.write_text(CONFIG)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 20.0) -> None:
        self.starts += 1
        log = self.root / f"chatd-{self.starts}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatd", "serve", "--config", str(self.config)]
                + ["--listen", f"127.0.0.1:{self.port}", "--data", str(self.data)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while READY not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"chatd did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
