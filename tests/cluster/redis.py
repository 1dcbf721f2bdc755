"""A real ``redis-server`` child process for the cluster tests.

Mocks would hide exactly what the broker has to survive (a killed server, a restart that
replays its AOF, a port that refuses connections), so the tests run the Debian package's
server on a free loopback port, with ``appendfsync always`` so that a restart (even after
SIGKILL) keeps every acknowledged write.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

_install_tried = False


def redis_server_binary() -> str:
    """The ``redis-server`` path; installs the Debian package once when we are root, or skips."""
    global _install_tried
    path = shutil.which("redis-server")
    if path is None and os.geteuid() == 0 and not _install_tried:
        _install_tried = True
        subprocess.run(
            ["apt-get", "install", "-y", "redis-server"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=600,
        )
        path = shutil.which("redis-server")
    if path is None:
        reason = "redis-server is not installed"
        if os.geteuid() != 0:
            reason += " (and we are not root, so cannot apt-get install redis-server)"
        else:
            reason += " (apt-get install -y redis-server failed)"
        pytest.skip(reason)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server: start it, stop it politely, kill it, restart it on the same port and
    data directory (so the AOF written before brings the data back)."""

    def __init__(self, directory: Path, *, startup_timeout: float = 10.0) -> None:
        self.directory = directory
        self.port: int | None = None
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has never been started")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start on a free port the first time, on the same port afterwards; returns once the
        server answers PING."""
        if self.running:
            return
        binary = redis_server_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        # A free port can be taken between our probe and the server's bind: pick again (only
        # before the first successful start; a restart must keep its port).
        attempts = 3 if self.port is None else 1
        for attempt in range(attempts):
            port = self.port if self.port is not None else _free_port()
            if self._spawn(binary, port):
                self.port = port
                return
            if attempt == attempts - 1:
                log = self.directory / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server did not start on port {port}:\n{tail}")

    def _spawn(self, binary: str, port: int) -> bool:
        args = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False  # exited: most likely the port was taken
            if _pings(port):
                self._proc = proc
                return True
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        return False

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections open but answers nothing (a hung host)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL if it does not exit in ``timeout`` seconds)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused server would hold SIGTERM pending
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would; the AOF (fsync always) still has every write."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def restart(self) -> None:
        """Stop if running, then start again on the same port and directory."""
        self.stop()
        self.start()
