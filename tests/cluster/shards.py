"""Real shard processes for the cluster tests: ``python -m chatd serve --discovery ...``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from chatd.discovery import Discovery, Shard, write_discovery


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held open while picked, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class Shards:
    """N shards of one cluster on loopback, each its own process and LMDB directory."""

    def __init__(
        self, directory: Path, n: int, broker_url: str, *, log_level: str = "WARNING"
    ) -> None:
        self.directory = directory
        self.log_level = log_level
        directory.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(2 * n)
        shards = [
            Shard(f"s{i + 1}", f"http://127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}")
            for i in range(n)
        ]
        self.path = directory / "discovery.toml"
        self.broker_url = broker_url
        self.discovery: Discovery = write_discovery(self.path, shards, broker_url, "t" * 32)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.config = directory / "chatd.toml"  # tests sign many users up from one address
        self.config.write_text(
            "[limits]\nsignup_rate = 1000.0\nsignup_burst = 1000\n"
            "login_rate = 1000.0\nlogin_burst = 1000\n"
            "[presence]\ngrace = 0.3\nsweep_interval = 0.2\n"
        )

    def url(self, name: str) -> str:
        return self.discovery.shard(name).url

    def home(self, user_id: str) -> Shard:
        return self.discovery.home(user_id)

    def start(self, name: str) -> None:
        with open(self.directory / f"{name}.log", "ab") as log:  # the child keeps its own
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "chatd", "serve", "--discovery", str(self.path)]
                + ["--shard", name, "--data", str(self.directory / name)]
                + ["--config", str(self.config)]
                + ["--log-level", self.log_level],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url(name) + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"shard {name} did not start: see {self.directory / name}.log")

    def use_shards(self, names: list[str]) -> Path:
        """Write a discovery file listing ``names`` (known shards keep their addresses, new
        ones get free ports) and start shards with it from now on; the previous file's path
        (for ``chatd reshard --from``). Stop the shards first."""
        assert not self.procs, "stop the shards before changing the shard list"
        known = {shard.name: shard for shard in self.discovery.shards}
        ports = _free_ports(2 * len(names))
        shards = [
            known.get(name)
            or Shard(name, f"http://127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}")
            for i, name in enumerate(names)
        ]
        old, self.path = self.path, self.directory / f"discovery-{'-'.join(names)}.toml"
        self.discovery = write_discovery(self.path, shards, self.broker_url, "t" * 32)
        return old

    def start_all(self) -> None:
        for shard in self.discovery.shards:
            self.start(shard.name)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
