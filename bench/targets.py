"""The servers a scenario runs against: chatd itself and the two bare baselines.

chatd is started as ``python -m chatd serve`` on 127.0.0.1 port 0 with a fresh data dir and
the bench config below (rate limits out of the way, sessions per user raised so a few users can
hold thousands of idle connections), or reached at ``--target URL`` when already running.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import users
from bench.procs import Proc, Procs, python

KINDS = ("chatd", "trio", "websockets")
LABELS = {
    "chatd": "chatd (auth + durable LMDB)",
    "trio": "bare trio + wsproto",
    "websockets": "bare asyncio + uvloop + websockets",
}

BENCH_CONFIG = """\
# chatd config used by the bench: limits out of the way of the load, everything else default.
[server]
max_connections = 19500
accept_rate = 1000000.0
accept_burst = 1000000

[limits]
max_connections_per_ip = 19500
send_rate = 1000000.0
send_burst = 1000000
login_rate = 1000000.0
login_burst = 1000000
signup_rate = 1000000.0
signup_burst = 1000000
max_sessions_per_user = 1000
"""


@dataclass
class Target:
    kind: str
    host: str
    port: int
    path: str = "/v1/ws"
    proc: Proc | None = None
    pid: int | None = None
    http_url: str | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    def tokens(self, user_ids: list[str]) -> dict[str, str]:
        """A token per user: real signup + login on chatd; the baselines take the user id."""
        if self.http_url is None:
            return {u: u for u in user_ids}
        return users.signup_and_login(self.http_url, user_ids)

    def metrics(self) -> dict[str, float] | None:
        """Group-commit counters from ``/metrics`` if chatd exposes them, else None."""
        if self.http_url is None:
            return None
        try:
            with urllib.request.urlopen(self.http_url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        found = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s+([-+\d.eE]+)$", line)
            if m and re.search(r"commit|batch", m.group(1)):
                found[m.group(1)] = float(m.group(2))
        return found or None


#: The group-commit batch counter on chatd's ``/metrics``: one LMDB write transaction each.
BATCHES = "chatd_commit_batches_total"


def commit_figures(
    before: dict[str, float] | None, after: dict[str, float] | None, acked: int, duration: float
) -> dict[str, Any]:
    """A window's group-commit figures from two :meth:`Target.metrics` readings: batches per
    second (``lmdb_commits_per_s``: one synced LMDB transaction per batch), the mean batch in
    acked messages (``mean_batch``) and the change of every commit counter. Empty when the
    target exposes no metrics (the baselines)."""
    if not before or not after:
        return {}
    out: dict[str, Any] = {"commit_metrics": {k: after[k] - before.get(k, 0) for k in after}}
    if BATCHES in before and BATCHES in after:
        batches = after[BATCHES] - before[BATCHES]
        out["lmdb_commits_per_s"] = batches / duration
        if batches > 0:
            out["mean_batch"] = acked / batches
    return out


def start_chatd(procs: Procs, workdir: Path, config_text: str, tag: str) -> Target:
    config = workdir / "bench-chatd.toml"
    config.write_text(config_text)
    data = workdir / f"data-{tag}"
    argv = [python(), "-m", "chatd", "serve", "--listen", "127.0.0.1:0"]
    argv += ["--data", str(data), "--config", str(config), "--log-level", "WARNING"]
    proc = procs.add(Proc("chatd", argv, workdir / f"chatd-{tag}.log"))
    line = proc.wait_log("chatd listening on http://", timeout=60)
    url = line.split("listening on ", 1)[1].strip()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return Target("chatd", host, int(port), proc=proc, pid=proc.pid, http_url=url)


def start_baseline(procs: Procs, workdir: Path, kind: str, tag: str) -> Target:
    argv = [python(), "-m", "bench.baselines", kind, "--listen", "127.0.0.1:0"]
    proc = procs.add(Proc(f"baseline-{kind}", argv, workdir / f"baseline-{kind}-{tag}.log"))
    line = proc.wait_log("baseline listening on ws://", timeout=30)
    host, port = line.split("ws://", 1)[1].strip().rsplit(":", 1)
    return Target(kind, host, int(port), path="/", proc=proc, pid=proc.pid)


def remote_chatd(url: str, pid: int | None) -> Target:
    """A chatd the bench did not start (``--target URL``; ``--server-pid`` to measure it)."""
    url = url.rstrip("/")
    hostport = url.split("://", 1)[-1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    return Target("chatd", host, int(port), pid=pid, http_url=url)
