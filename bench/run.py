"""One bench invocation: a temp work dir, every process it starts, pinning, clean-up.

``with Run(args) as run:`` guarantees that whatever happens inside (a finished scenario, an
error, Ctrl-C, SIGTERM) every server and load client started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from bench import report, targets
from bench.fleet import Fleet
from bench.procs import Procs, pin, rss_kib
from bench.targets import Target

SERVER_CPU, CLIENT_CPU = {0}, {1}


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Procs()
        self.workdir = Path(tempfile.mkdtemp(prefix="chatd-bench-"))
        self.pinned = bool(getattr(args, "pin", False))
        self._started = 0
        self.config_text = targets.BENCH_CONFIG
        self.stamp = report.stamp()
        if getattr(args, "chatd_config", None):
            self.config_text = Path(args.chatd_config).read_text()

    def __enter__(self) -> Run:
        signal.signal(signal.SIGTERM, _sigterm)
        if self.pinned:
            os.sched_setaffinity(0, CLIENT_CPU)  # the bench itself stays off the server's core
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.procs.stop_all()
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            logs = sorted(self.workdir.glob("*.log"))
            for log in logs:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                if tail:
                    print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)
        if getattr(self.args, "keep_tmp", False):
            print(f"bench: work dir kept at {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    # -- servers
    def start(self, kind: str) -> Target:
        self._started += 1
        tag = f"{kind}-{self._started}"
        if kind == "chatd":
            if getattr(self.args, "target", None):
                return targets.remote_chatd(self.args.target, self.args.server_pid)
            return targets.start_chatd(self.procs, self.workdir, self.config_text, tag)
        return targets.start_baseline(self.procs, self.workdir, kind, tag)

    def pin_server(self, target: Target) -> None:
        """Pin once set-up (argon2-bound signups) is done, so set-up can use both cores."""
        if self.pinned and target.pid is not None:
            pin(target.pid, SERVER_CPU)

    def stop(self, target: Target) -> int | None:
        if target.proc is None:
            return None
        return self.procs.stop(target.proc)

    def fleet(self, target: Target, clients: int, max_secs: float = 3600.0) -> Fleet:
        """Load clients for ``target``; all their connections heartbeat (``--hb-interval``)."""
        fleet = Fleet(
            self.procs,
            self.workdir,
            host=target.host,
            port=target.port,
            path=target.path,
            clients=clients,
            cpus=CLIENT_CPU if self.pinned else None,
            max_secs=max_secs,
        )
        interval = getattr(self.args, "hb_interval", 0.0)
        if interval > 0:
            kind = getattr(self.args, "hb_kind", "ws")
            fleet.ask_all({"cmd": "heartbeat", "interval": interval, "kind": kind}, 30)
        return fleet

    def profile_path(self, target: Target, label: str) -> Path | None:
        """Where ``--profile`` keeps py-spy's raw stacks for one window (None: not profiling)."""
        if not getattr(self.args, "profile", False) or target.pid is None:
            return None
        self.args.out.mkdir(parents=True, exist_ok=True)
        return (
            Path(self.args.out)
            / f"{self.args.scenario}-{self.stamp}-{target.kind}-{label}.pyspy.txt"
        )

    def rss(self, target: Target) -> int | None:
        return rss_kib(target.pid) if target.pid is not None else None


def settle(seconds: float) -> None:
    """Let the server finish what a burst left behind (and its collector run) before sampling."""
    time.sleep(seconds)


def describe_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k != "func"}


def each_target(
    run_: Run,
    args: argparse.Namespace,
    one_target: Callable[[Run, argparse.Namespace, str], dict[str, Any]],
    summarize: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Run a scenario against every ``--targets`` server in turn, then summarize them."""
    targets = {kind: one_target(run_, args, kind) for kind in args.targets}
    return {"targets": targets, "summary": summarize(targets)}
