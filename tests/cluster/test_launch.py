"""``chatd cluster``: a real redis-server and real shards in child processes, on loopback ports
picked free (``--port 0``), in a tmp data dir; SIGTERM stops everything, a dead shard stops the
rest, and every child is reaped."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatd.discovery import load_discovery

ROOT = Path(__file__).resolve().parents[2]
READY = 60.0  # generous bounds for a loaded CI machine; nothing here measures speed
STOP = 60.0

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


class Launched:
    def __init__(self, proc: subprocess.Popen[bytes], stderr: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr
        self.lines: list[str] = []
        self.pending = b""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = READY) -> None:
        """Read the launcher's stdout until a line contains ``text``. Raw reads: a buffered
        readline would hide lines select() no longer sees."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            assert ready, f"no {text!r} within {timeout} s; stderr:\n{self.stderr}"
            chunk = os.read(fd, 65536)
            assert chunk, f"launcher exited ({self.proc.wait()}) first; stderr:\n{self.stderr}"
            *lines, self.pending = (self.pending + chunk).split(b"\n")
            self.lines += [line.decode() for line in lines]

    def shard_urls(self) -> dict[str, str]:
        return {
            line.split()[0]: line.split()[1]
            for line in self.lines
            if line.startswith("s") and " http://" in line
        }

    def children(self) -> list[tuple[int, str]]:
        """(pid, start time) of the launcher's child processes, from /proc."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == self.proc.pid:
                out.append((int(entry.name), fields[19]))
        return out


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...; [19] is the
    start time), or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def alive(children: list[tuple[int, str]]) -> list[int]:
    """The pids among ``children`` that still exist (same pid and start time), zombies too."""
    left = []
    for pid, started in children:
        fields = _stat(pid)
        if fields is not None and fields[19] == started:
            left.append(pid)
    return left


@contextmanager
def launched(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Launched]:
    stderr = tmp_path / "launcher.stderr"
    base = {k: v for k, v in os.environ.items() if k != "CHATD_CLUSTER_SECRET"}
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatd", "cluster", "--data", str(tmp_path / "cluster")]
            + ["--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=tmp_path,
            env={**base, **(env or {}), "PYTHONPATH": str(ROOT)},
        )
    launcher = Launched(proc, stderr)
    seen: list[tuple[int, str]] = []
    try:
        yield launcher
    finally:
        if proc.poll() is None:  # a failed test: leave nothing behind
            seen = launcher.children()
            proc.kill()
            proc.wait()
            for pid in alive(seen):
                os.kill(pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()


def healthz(url: str) -> int:
    """GET /healthz's status; 0 when nothing answers (the shard died)."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            return int(response.status)
    except OSError:
        return 0


def wait_gone(children: list[tuple[int, str]], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(children)


@needs_redis
def test_two_shards_come_up_answer_and_stop_on_sigterm(tmp_path: Path) -> None:
    with launched(tmp_path, "--shards", "2") as launcher:
        launcher.wait_for("chatd cluster ready")
        urls = launcher.shard_urls()
        assert sorted(urls) == ["s1", "s2"]
        for url in urls.values():
            assert healthz(url) == 200, launcher.stderr
        children = launcher.children()
        assert len(children) == 3  # redis-server and two shards

        discovery = load_discovery(tmp_path / "cluster" / "discovery.toml", env={})
        assert {s.name: s.url for s in discovery.shards} == urls
        assert discovery.broker_url.startswith("redis://127.0.0.1:")
        assert len(discovery.secret) >= 16
        assert (tmp_path / "cluster" / "redis" / "appendonlydir").is_dir()  # AOF is on

        launcher.proc.send_signal(signal.SIGTERM)
        assert launcher.proc.wait(timeout=STOP) == 0, launcher.stderr
        assert wait_gone(children) == [], "children left behind"
        assert "[s1]" in launcher.stderr and "[s2]" in launcher.stderr  # logs, prefixed


@needs_redis
def test_a_shard_that_dies_stops_the_rest_and_exits_1(tmp_path: Path) -> None:
    with launched(tmp_path, "--shards", "2") as launcher:
        launcher.wait_for("chatd cluster ready")
        children = launcher.children()
        s1 = next(
            pid
            for pid, _ in children
            if "--shard\0s1\0" in Path(f"/proc/{pid}/cmdline").read_text()
        )
        os.kill(s1, signal.SIGKILL)
        assert launcher.proc.wait(timeout=STOP) == 1, launcher.stderr
        assert "s1 exited with status -9" in launcher.stderr
        assert wait_gone(children) == [], "children left behind"


def test_one_shard_needs_no_redis(tmp_path: Path) -> None:
    # PATH without redis-server: one shard must not look for it.
    env = {"PATH": str(Path(sys.executable).parent)}
    with launched(tmp_path, "--shards", "1", env=env) as launcher:
        launcher.wait_for("chatd cluster ready")
        assert healthz(launcher.shard_urls()["s1"]) == 200, launcher.stderr
        children = launcher.children()
        assert len(children) == 1
        launcher.proc.send_signal(signal.SIGINT)
        assert launcher.proc.wait(timeout=STOP) == 0, launcher.stderr
        assert wait_gone(children) == []
    assert not (tmp_path / "cluster" / "redis").exists()


def test_two_shards_without_redis_say_how_to_install_it(tmp_path: Path) -> None:
    env = {"PATH": str(Path(sys.executable).parent)}
    with launched(tmp_path, "--shards", "2", env=env) as launcher:
        assert launcher.proc.wait(timeout=30) == 1
        assert "apt-get install -y redis-server" in launcher.stderr


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    with launched(tmp_path, "--shards", "0") as launcher:
        assert launcher.proc.wait(timeout=30) == 2
        assert "--shards" in launcher.stderr
