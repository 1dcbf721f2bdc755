"""Processes the bench starts: servers and load clients; pinning; CPU and RSS from /proc.

Every child gets ``PR_SET_PDEATHSIG`` (SIGTERM), so it goes away even if the bench is killed
with SIGKILL; :class:`Procs` stops the rest, last started first, on the way out of a run
(normal end, error or Ctrl-C). Only processes started here are ever signalled, by PID.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc: children then rely on stop_all() alone
    _LIBC = None


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM this child when the bench process dies."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def pin(pid: int, cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of ``pid`` (new threads inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, FileNotFoundError):
            pass


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the whole process (all threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the whole process (all threads) so far."""
    return sum(cpu_times(pid))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


class CpuMeter:
    """CPU% of some processes between :meth:`start` and :meth:`stop` (100 = one core)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._c0: list[tuple[float, float]] = []

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._c0 = [cpu_times(p) for p in self.pids]
        return self

    def stop(self) -> dict[str, float]:
        """cpu_pct (user + system), sys_pct (system alone), cpu_s, secs."""
        secs = time.monotonic() - self._t0
        user = sys_ = 0.0
        for pid, (u0, s0) in zip(self.pids, self._c0, strict=True):
            u1, s1 = cpu_times(pid)
            user, sys_ = user + u1 - u0, sys_ + s1 - s0
        pct = 100.0 / secs if secs > 0 else 0.0
        return {
            "cpu_pct": (user + sys_) * pct,
            "sys_pct": sys_ * pct,
            "cpu_s": user + sys_,
            "secs": secs,
        }


class Proc:
    """A child process with its stderr in a log file."""

    def __init__(
        self, name: str, argv: list[str], log: Path, *, stdin: bool = False, stdout: bool = False
    ) -> None:
        self.name = name
        self.log = log
        self._log = open(log, "wb")  # closed in stop()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=_die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_log(self, marker: str, timeout: float) -> str:
        """Wait for a stderr line containing ``marker``; return that line."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.log.read_text(errors="replace").splitlines():
                if marker in line:
                    return line
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no {marker!r} within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        self._log.close()
        return self.popen.returncode


class ClientProc(Proc):
    """A load client (``bench/loadclient.py``): JSON commands in, one JSON reply line out."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        super().__init__(name, argv, log, stdin=True, stdout=True)
        self._lines: queue.Queue[bytes] = queue.Queue()
        assert self.popen.stdout is not None
        threading.Thread(target=self._reader, args=(self.popen.stdout,), daemon=True).start()

    def _reader(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            self._lines.put(line)
        self._lines.put(b"")

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.popen.stdin.flush()

    def reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no reply within {timeout:.0f} s") from None
        if not line:
            raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
        data: dict[str, Any] = json.loads(line)
        if "error" in data:
            raise RuntimeError(f"{self.name}: {data['error']}")
        return data

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            try:
                self.send({"cmd": "exit"})
                self.popen.wait(timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        return super().stop(timeout)


class Procs:
    """Everything a run started; :meth:`stop_all` in a ``finally``."""

    def __init__(self) -> None:
        self.running: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.running.append(proc)
        return proc

    def stop(self, proc: Proc) -> int | None:
        if proc in self.running:
            self.running.remove(proc)
        return proc.stop()

    def stop_all(self) -> None:
        while self.running:
            proc = self.running.pop()
            try:
                proc.stop()
            except Exception as exc:  # keep stopping the others
                print(f"bench: stopping {proc.name}: {exc}", file=sys.stderr)


def python() -> str:
    return sys.executable
