"""A local chatd cluster for the bench: ``python -m chatd cluster`` started and stopped by PID.

The launcher starts a redis-server and N shard processes and prints one ``sI URL WS_URL`` line
per shard, then ``chatd cluster ready``. The bench reads those lines, finds the shards and Redis
among the launcher's children by PID (for their CPU time), and loads the generated discovery
file with ``chatd.discovery`` (the only chatd module the bench imports: it knows homes by
rendezvous hashing, which is the contract, so the bench can pick pairs by home shard).
Stopping is SIGTERM to the launcher, which stops its shards, then Redis; a child that outlives
it (the launcher killed mid-stop) is killed by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from bench.procs import Proc, Procs, python
from bench.targets import Target
from bench.users import PASSWORD, Api, ApiError
from chatd.discovery import Discovery, load_discovery

#: The launcher gives each child 30 s to drain after SIGTERM; give it that and some.
LAUNCHER_STOP_SECS = 45.0
READY_SECS = 90.0
#: Log lines worth reporting from the shards (their stderr, copied by the launcher).
PROBLEM_MARKERS = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback", "exited with status")


def dm_channel(a: str, b: str) -> str:
    """The 1:1 channel id, ``dm:<lo>:<hi>`` in string order (docs/protocol.md; the channel's
    sequencer is ``Discovery.home`` of this id)."""
    lo, hi = sorted((a, b))
    return f"dm:{lo}:{hi}"


class LauncherProc(Proc):
    """``chatd cluster``: its stdout (the ready lines) read by a thread, stderr in the log."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        super().__init__(name, argv, log, stdout=True)
        self.lines: list[str] = []
        assert self.popen.stdout is not None
        threading.Thread(target=self._reader, args=(self.popen.stdout,), daemon=True).start()

    def _reader(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    def wait_line(self, marker: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                if marker in line:
                    return line
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no {marker!r} within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = LAUNCHER_STOP_SECS) -> int | None:
        return super().stop(timeout)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (``/proc/PID/task/*/children``)."""
    found: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


@dataclass
class Cluster:
    """A running cluster: its launcher, discovery file, shard targets and PIDs."""

    proc: LauncherProc
    data: Path
    discovery: Discovery
    targets: dict[str, Target]  #: shard name -> where its clients connect
    shard_pids: dict[str, int]
    redis_pid: int | None
    cmdlines: dict[int, list[str]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.targets)

    @property
    def pids(self) -> dict[str, int]:
        """Every server process whose CPU a message costs: the shards and Redis."""
        out = dict(self.shard_pids)
        if self.redis_pid is not None:
            out["redis"] = self.redis_pid
        return out

    def home(self, key: str) -> str:
        """The shard name that owns a user id or a channel id."""
        return self.discovery.home(key).name

    def health(self) -> dict[str, Any]:
        """Each shard's ``/healthz`` (broker state, ``outbox_pending``)."""
        out: dict[str, Any] = {}
        for name, target in self.targets.items():
            try:
                with urllib.request.urlopen(f"{target.http_url}/healthz", timeout=5) as resp:
                    out[name] = json.loads(resp.read())
            except (urllib.error.URLError, OSError, ValueError) as exc:
                out[name] = {"error": str(exc)}
        return out

    def log_problems(self, limit: int = 20) -> dict[str, Any]:
        """Warnings, errors and tracebacks the shards (and the launcher) logged so far."""
        try:
            lines = self.proc.log.read_text(errors="replace").splitlines()
        except OSError:
            return {"count": 0, "first": []}
        bad = [ln for ln in lines if any(m in ln for m in PROBLEM_MARKERS)]
        return {"count": len(bad), "first": bad[:limit]}


def start(procs: Procs, workdir: Path, shards: int, config_text: str, tag: str) -> Cluster:
    """``python -m chatd cluster --shards N --port 0`` with the bench config on every shard."""
    config = workdir / f"bench-cluster-{tag}.toml"
    config.write_text(config_text)
    data = workdir / f"cluster-{tag}"
    argv = [python(), "-m", "chatd", "cluster", "--shards", str(shards), "--data", str(data)]
    argv += ["--port", "0", "--config", str(config)]
    proc = LauncherProc(f"cluster-{tag}", argv, workdir / f"cluster-{tag}.log")
    procs.add(proc)
    proc.wait_line("chatd cluster ready", READY_SECS)
    discovery = load_discovery(data / "discovery.toml", env={})
    shard_pids: dict[str, int] = {}
    redis_pid = None
    cmdlines: dict[int, list[str]] = {}
    for pid in children(proc.pid):
        argv_ = cmdline(pid)
        cmdlines[pid] = argv_
        if argv_ and "redis" in os.path.basename(argv_[0]):
            redis_pid = pid
        elif "--shard" in argv_:
            shard_pids[argv_[argv_.index("--shard") + 1]] = pid
    targets: dict[str, Target] = {}
    for line in proc.lines:
        parts = line.split()
        if len(parts) == 3 and parts[2].startswith(("ws://", "wss://")):
            name, url, ws_url = parts
            ws = urlsplit(ws_url)
            targets[name] = Target(
                "chatd",
                ws.hostname or "127.0.0.1",
                ws.port or 80,
                path=ws.path,
                proc=proc,
                pid=shard_pids.get(name),
                http_url=url,
            )
    if set(targets) != set(discovery.names) or set(shard_pids) != set(discovery.names):
        raise RuntimeError(
            f"cluster-{tag}: shards printed {sorted(targets)}, running {sorted(shard_pids)}, "
            f"discovery lists {sorted(discovery.names)}"
        )
    return Cluster(proc, data, discovery, targets, shard_pids, redis_pid, cmdlines)


def stop(procs: Procs, cluster: Cluster) -> int | None:
    """SIGTERM the launcher (it stops shards, then Redis); kill by PID any child left."""
    status = procs.stop(cluster.proc)
    for pid, argv in cluster.cmdlines.items():
        if cmdline(pid) == argv:  # still the process we started (not a reused PID)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return status


def accounts(cluster: Cluster, user_ids: list[str], *, workers: int = 8) -> dict[str, Any]:
    """Sign up and log in every user, round-robin over the shards (any shard answers; the
    home shard hashes the password). Returns the tokens, and how many logins named a ws_url
    other than the one of ``Discovery.home`` (should be none)."""
    urls = [cluster.targets[n].http_url for n in cluster.names]
    local = threading.local()
    apis: list[Api] = []
    mismatched: list[str] = []

    def api(i: int) -> Api:
        if not hasattr(local, "apis"):
            local.apis = {}
        if i not in local.apis:
            local.apis[i] = Api(str(urls[i]))
            apis.append(local.apis[i])
        return local.apis[i]  # type: ignore[no-any-return]

    def one(item: tuple[int, str]) -> tuple[str, str]:
        n, user = item
        a = api(n % len(urls))
        status, body = a.call_retrying(
            "POST", "/v1/signup", {"user_id": user, "password": PASSWORD}
        )
        if status not in (201, 409):
            raise ApiError(f"signup {user}: {status} {body}")
        status, body = a.call_retrying("POST", "/v1/login", {"user_id": user, "password": PASSWORD})
        if status != 200:
            raise ApiError(f"login {user}: {status} {body}")
        if body.get("ws_url") != cluster.discovery.home(user).ws_url:
            mismatched.append(f"{user}: {body.get('ws_url')}")
        return user, body["token"]

    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(workers) as pool:
            tokens = dict(pool.map(one, enumerate(user_ids)))
    finally:
        for a in apis:
            a.close()
    return {
        "tokens": tokens,
        "secs": time.monotonic() - t0,
        "ws_url_mismatches": len(mismatched),
        "ws_url_mismatch_examples": mismatched[:5],
    }
