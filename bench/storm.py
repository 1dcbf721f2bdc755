"""Scenario ``storm``: restart the server under 10,000 connected client-library sessions.

``python -m bench storm --sessions 10000 --procs 5``: a chatd (``python -m chatd serve``, its
own data directory, the default ``server.accept_rate``/``accept_burst``: the bound under
test) and ``--procs`` client processes (``bench/stormclient.py``), each holding its share of
the sessions with the project's client library (``chatd/client/session.py``: jittered
exponential backoff, resume with ``since``). Sessions share ``--users`` accounts (argon2
logins are expensive; ``limits.max_sessions_per_user`` is raised).

Once every session is up, for each ``--restarts`` kind in turn (``term``: SIGTERM, the drain
closes WebSockets with 1001 spread over half of ``server.drain_timeout``, the process exits
and a new one starts on the same port and data; ``kill``: SIGKILL, then the same restart):
sample every ``--sample`` s the sessions up and reconnected (by their welcome count), the
server's accepted connections/s (``chatd_accepted_connections_total`` over one kept-alive
``/metrics`` connection) and the clients' hellos/s (welcomes), until every session is back or
``--max-wait`` s passed. Goals (issue 16): all back within 60 s of the restart, accepts/s
bounded by the configured rate, no ERROR or traceback in any server log. Writes
``bench/results/storm-<stamp>.json`` and a PNG.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import report, users
from bench.procs import Proc, Procs, cpu_seconds, python, rss_kib

CONFIG = """\
# chatd config of the storm run: the default accept rate (the bound under test), room for
# many sessions per user and per address, login and signup limits out of the way.
[server]
max_connections = 19500
accept_rate = {accept_rate}
accept_burst = {accept_burst}

[limits]
max_connections_per_ip = 19500
max_sessions_per_user = 1000
login_rate = 1000000.0
login_burst = 1000000
signup_rate = 1000000.0
signup_burst = 1000000
"""
GOAL_SECS = 60.0
LOG_MARKS = ("ERROR", "CRITICAL", "Traceback")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """chatd on a fixed port and data directory, stopped with SIGTERM or SIGKILL, restarted."""

    def __init__(self, procs: Procs, workdir: Path, port: int, config_text: str) -> None:
        self.procs, self.workdir, self.port = procs, workdir, port
        self.url = f"http://127.0.0.1:{port}"
        self.config = workdir / "storm-chatd.toml"
        self.config.write_text(config_text)
        self.data = workdir / "data"
        self.proc: Proc | None = None
        self.logs: list[Path] = []

    def start(self) -> float:
        """Start it; the seconds until it logged that it listens."""
        argv = [python(), "-m", "chatd", "serve", "--listen", f"127.0.0.1:{self.port}"]
        argv += ["--data", str(self.data), "--config", str(self.config)]
        argv += ["--log-level", "WARNING"]
        log = self.workdir / f"chatd-{len(self.logs) + 1}.log"
        self.logs.append(log)
        t0 = time.monotonic()
        self.proc = Proc("chatd", argv, log)
        self.procs.add(self.proc)
        self.proc.wait_log("chatd listening on http://", timeout=60)
        return time.monotonic() - t0

    def signal(self, how: str) -> tuple[float, int | None]:
        """SIGTERM (drain) or SIGKILL; wait for the exit. (seconds it took, exit status)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.popen.send_signal(signal.SIGTERM if how == "term" else signal.SIGKILL)
        try:
            code = self.proc.popen.wait(60)
        except Exception:
            self.proc.popen.kill()
            code = self.proc.popen.wait(10)
        self.procs.stop(self.proc)
        return time.monotonic() - t0, code

    def log_problems(self) -> list[str]:
        lines: list[str] = []
        for log in self.logs:
            text = log.read_text(errors="replace") if log.exists() else ""
            lines += [ln for ln in text.splitlines() if any(m in ln for m in LOG_MARKS)]
        return lines


class Scraper:
    """Reads ``chatd_accepted_connections_total`` in a thread, one kept-alive connection per
    server process (it may wait in the listen backlog behind the storm at first)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latest: tuple[float, float] | None = None  # (monotonic, accepted so far)
        self.generation = 0
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def restarted(self) -> None:
        self.generation += 1
        self.latest = None

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        gen = -1
        while not self.stop.is_set():
            if gen != self.generation:
                if conn is not None:
                    conn.close()
                conn, gen = None, self.generation
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/metrics")
                text = conn.getresponse().read().decode()
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.1)
                continue
            m = re.search(r"^chatd_accepted_connections_total ([\d.e+]+)$", text, re.M)
            if m and gen == self.generation:
                self.latest = (time.monotonic(), float(m.group(1)))
            time.sleep(0.2)
        if conn is not None:
            conn.close()


class Clients:
    """The client processes and the latest report line of each."""

    def __init__(self, procs: Procs, workdir: Path, url: str, parts: list[list[Any]], args: Any):
        self.procs: list[Proc] = []
        self.latest: list[dict[str, Any] | None] = [None] * len(parts)
        for i, part in enumerate(parts):
            tokens = workdir / f"tokens-{i}.json"
            tokens.write_text(json.dumps(part))
            argv = [python(), "-m", "bench.stormclient", "--url", url, "--tokens", str(tokens)]
            argv += ["--concurrency", str(args.concurrency), "--heartbeat", str(args.heartbeat)]
            argv += ["--max-secs", str(args.max_secs)]
            proc = Proc(f"stormclient-{i}", argv, workdir / f"stormclient-{i}.log", stdout=True)
            procs.add(proc)
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(i, proc), daemon=True).start()

    def _read(self, i: int, proc: Proc) -> None:
        assert proc.popen.stdout is not None
        for line in proc.popen.stdout:
            try:
                self.latest[i] = json.loads(line)
            except ValueError:
                pass

    def totals(self) -> dict[str, Any]:
        rows = [r for r in self.latest if r is not None]
        by: dict[int, int] = {}
        why: dict[str, int] = {}
        for r in rows:
            for k, v in r.get("ended_why", {}).items():
                why[k] = why.get(k, 0) + v
            for k, v in r["by_connects"].items():
                by[int(k)] = by.get(int(k), 0) + v
        return {
            "reporting": len(rows),
            "n": sum(r["n"] for r in rows),
            "up": sum(r["up"] for r in rows),
            "connects": sum(r["connects"] for r in rows),
            "ended": sum(r["ended"] for r in rows),
            "ended_why": why,
            "by_connects": by,
        }

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


def at_least(by: dict[int, int], k: int) -> int:
    return sum(v for c, v in by.items() if c >= k)


def watch(
    server: Server,
    clients: Clients,
    scraper: Scraper,
    *,
    target: int,
    want: int,
    t0: float,
    max_wait: float,
    sample: float,
) -> tuple[list[dict[str, Any]], float | None]:
    """Sample until ``target`` sessions have ``want`` welcomes (or ``max_wait``); the samples
    and the seconds from ``t0`` until all were back."""
    samples: list[dict[str, Any]] = []
    back_at = None
    last_acc: tuple[float, float] | None = None
    last_conn: tuple[float, int] | None = None
    while (now := time.monotonic()) - t0 < max_wait:
        tot = clients.totals()
        back = at_least(tot["by_connects"], want)
        row: dict[str, Any] = {
            "t": now - t0,
            "up": tot["up"],
            "back": back,
            "ended": tot["ended"],
            "connects": tot["connects"],
        }
        if last_conn is not None and now > last_conn[0]:
            row["hellos_per_s"] = (tot["connects"] - last_conn[1]) / (now - last_conn[0])
        last_conn = (now, tot["connects"])
        acc = scraper.latest
        if acc is not None:
            row["accepted"] = acc[1]
            if last_acc is not None and acc[0] > last_acc[0]:
                row["accepts_per_s"] = (acc[1] - last_acc[1]) / (acc[0] - last_acc[0])
            last_acc = acc
        if server.proc is not None and server.proc.alive():
            row["server_rss_kib"] = rss_kib(server.proc.pid)
            row["server_cpu_s"] = cpu_seconds(server.proc.pid)
        samples.append(row)
        if back >= target and back_at is None:
            back_at = now - t0
            break
        time.sleep(sample)
    return samples, back_at


def restart(
    kind: str, server: Server, clients: Clients, scraper: Scraper, n: int, want: int, args: Any
) -> dict[str, Any]:
    log(f"{kind}: signalling the server ({n} sessions up)")
    t0 = time.monotonic()
    stop_s, code = server.signal(kind)
    log(f"{kind}: exited {code} after {stop_s:.1f} s; restarting")
    scraper.restarted()
    start_s = server.start()
    log(f"{kind}: listening again {time.monotonic() - t0:.1f} s after the signal")
    load0 = os.getloadavg()[0]
    samples, back_at = watch(
        server, clients, scraper, target=n, want=want, t0=t0, max_wait=args.max_wait,
        sample=args.sample,
    )  # fmt: skip
    log(
        f"{kind}: {'all ' + str(n) + ' back' if back_at else 'NOT all back'}"
        + (f" {back_at:.1f} s after the signal" if back_at else "")
    )
    accepts = [r["accepts_per_s"] for r in samples if "accepts_per_s" in r]
    hellos = [r["hellos_per_s"] for r in samples if "hellos_per_s" in r]
    return {
        "kind": kind,
        "exit_code": code,
        "stop_s": stop_s,
        "start_s": start_s,
        "listening_s": stop_s + start_s,
        "all_back_s": back_at,
        "all_back_after_listening_s": None if back_at is None else back_at - stop_s - start_s,
        "max_accepts_per_s": max(accepts, default=None),
        "max_hellos_per_s": max(hellos, default=None),
        "loadavg_1m": load0,
        "samples": samples,
    }


def log(text: str) -> None:
    print(f"[storm {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def storm(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    procs = Procs()
    config = CONFIG.format(accept_rate=float(args.accept_rate), accept_burst=args.accept_burst)
    server = Server(procs, workdir, free_port(), config)
    scraper: Scraper | None = None
    try:
        server.start()
        names = [f"storm{i:04d}" for i in range(args.users)]
        t0 = time.monotonic()
        tokens = users.signup_and_login(server.url, names)
        log(f"{len(tokens)} users logged in in {time.monotonic() - t0:.1f} s")
        sessions = [
            [names[i % len(names)], tokens[names[i % len(names)]]] for i in range(args.sessions)
        ]
        parts = [sessions[i :: args.procs] for i in range(args.procs)]
        scraper = Scraper(server.port)
        t0 = time.monotonic()
        clients = Clients(procs, workdir, server.url, parts, args)
        first, up_at = watch(
            server, clients, scraper, target=args.sessions, want=1, t0=t0,
            max_wait=args.connect_wait, sample=args.sample,
        )  # fmt: skip
        held = first[-1]["back"]
        if up_at is None:  # a loaded machine: carry on with the sessions that are up
            log(f"only {held} of {args.sessions} sessions up after {args.connect_wait:.0f} s")
            if not held:
                raise RuntimeError("no session came up")
        else:
            log(f"all {args.sessions} sessions up in {up_at:.1f} s")
        time.sleep(args.settle)
        cpu0 = {pid: cpu_seconds(pid) for pid in clients.pids}
        rounds = []
        want = 1
        for kind in args.restarts:
            want += 1
            rounds.append(restart(kind, server, clients, scraper, held, want, args))
            time.sleep(args.settle)
        final = clients.totals()
        client_cpu_s = sum(cpu_seconds(pid) - cpu0[pid] for pid in clients.pids)
        assert server.proc is not None
        _, code = server.signal("term")
    finally:
        if scraper is not None:
            scraper.stop.set()
        procs.stop_all()
    problems = server.log_problems()
    accepts = [r.get("max_accepts_per_s") or 0 for r in rounds]
    goals = {
        "all_back_within_60s": {
            "value": [r["all_back_s"] for r in rounds],
            "met": all(r["all_back_s"] is not None and r["all_back_s"] < GOAL_SECS for r in rounds),
        },
        "accepts_per_s_bounded": {
            "value": max(accepts, default=0),
            "bound": f"accept_rate {args.accept_rate:g}/s, burst {args.accept_burst}",
            # a sample over ``--sample`` s may include the burst on top of the rate
            "met": max(accepts, default=0) <= args.accept_rate + args.accept_burst / args.sample,
        },
        "no_errors_in_server_log": {"value": len(problems), "met": not problems},
        "no_session_refused": {
            "value": final["ended"],
            "why": final["ended_why"],
            "met": final["ended"] == 0,
        },
    }
    summary = {
        "sessions": args.sessions,
        "procs": args.procs,
        "users": args.users,
        "first_connect_s": up_at,
        "sessions_up_before_restarts": held,
        "rounds": {
            r["kind"]: {k: v for k, v in r.items() if k not in ("samples", "kind")} for r in rounds
        },
        "client_cpu_s": client_cpu_s,
        "server_log_errors": len(problems),
        "last_exit_code": code,
        "goals": goals,
    }
    return {
        "first_connect": first,
        "rounds": rounds,
        "server_log_sample": problems[:20],
        "summary": summary,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    from bench.plots import _title

    rounds = result["rounds"]
    fig, axes = plt.subplots(3, len(rounds), figsize=(6 * len(rounds), 9), squeeze=False)
    for col, r in enumerate(rounds):
        xs = [s["t"] for s in r["samples"]]
        ax = axes[0][col]
        ax.plot(xs, [s["up"] for s in r["samples"]], label="sessions with a socket")
        ax.plot(xs, [s["back"] for s in r["samples"]], label="reconnected (welcome)")
        ax.axvline(r["listening_s"], color="tab:gray", ls="--", label="listening again")
        if r["all_back_s"] is not None:
            ax.axvline(r["all_back_s"], color="tab:green", ls="--", label="all back")
        ax.set_ylabel("sessions")
        ax.set_title(
            f"{r['kind'].upper()}: all back in "
            + (f"{r['all_back_s']:.1f} s" if r["all_back_s"] is not None else "-"),
            fontsize=9,
        )
        ax = axes[1][col]
        pts = [(s["t"], s["accepts_per_s"]) for s in r["samples"] if "accepts_per_s" in s]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".-", label="accepted/s (server)")
        pts = [(s["t"], s["hellos_per_s"]) for s in r["samples"] if "hellos_per_s" in s]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".-", label="hellos/s (welcomes)")
        rate = result["args"].get("accept_rate")
        if rate:
            ax.axhline(rate, color="red", ls=":", label="server.accept_rate")
        ax.set_ylabel("per second")
        ax = axes[2][col]
        pts = [(s["t"], s["server_rss_kib"] / 1024) for s in r["samples"] if "server_rss_kib" in s]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="tab:purple", label="server RSS")
        ax.set_ylabel("MiB")
        ax.set_xlabel("seconds since the signal")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    s = result["summary"]
    fig.suptitle(
        _title(
            result,
            f"Reconnect storm: {s['sessions']} client-library sessions, {s['procs']} processes; "
            f"server log errors {s['server_log_errors']}",
        ),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_parser(sub: Any) -> None:
    """``storm`` in ``python -m bench``'s sub-commands."""
    p = sub.add_parser("storm", help="restart (SIGTERM, SIGKILL) under N client-library sessions")
    p.add_argument("--sessions", type=int, default=10000, help="client sessions (10000)")
    p.add_argument("--procs", type=int, default=5, help="client processes (5)")
    p.add_argument("--users", type=int, default=50, help="accounts sharing them (50)")
    p.add_argument(
        "--restarts",
        type=lambda t: [k for k in t.split(",") if k],
        default=["term", "kill"],
        help="restart kinds in order: term (SIGTERM drain), kill (SIGKILL) (term,kill)",
    )
    p.add_argument(
        "--concurrency", type=int, default=100, help="connects in flight per client process (100)"
    )
    p.add_argument("--heartbeat", type=float, default=20.0, help="sessions' ping period (20)")
    p.add_argument("--accept-rate", type=float, default=2000.0, help="server.accept_rate (2000)")
    p.add_argument("--accept-burst", type=int, default=1000, help="server.accept_burst (1000)")
    p.add_argument("--max-wait", type=float, default=120.0, help="seconds to wait per round")
    p.add_argument(
        "--connect-wait", type=float, default=600.0, help="seconds for the first connects (600)"
    )
    p.add_argument("--settle", type=float, default=5.0, help="seconds between rounds (5)")
    p.add_argument("--sample", type=float, default=0.5, help="sampling period, seconds (0.5)")
    p.add_argument("--max-secs", type=float, default=900.0, help="client processes' lifetime")
    p.add_argument("--out", type=Path, default=report.DEFAULT_OUT, help="results directory")
    p.add_argument("--keep-tmp", action="store_true", help="keep the work dir (server logs)")
    p.set_defaults(scenario="storm")


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(args: argparse.Namespace) -> int:
    """Run, write the JSON and PNG; 1 unless every goal was met."""
    signal.signal(signal.SIGTERM, _interrupted)  # stop what we started on the way out
    workdir = Path(tempfile.mkdtemp(prefix="chatd-storm-"))
    result = report.envelope("storm", {k: v for k, v in vars(args).items() if k != "func"}, None)
    try:
        result.update(storm(args, workdir))
    finally:
        if args.keep_tmp:
            log(f"work dir kept at {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    json_path, png_path = report.write(args.out, "storm", result, plot)
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {json_path} and {png_path}")
    return 0 if all(g["met"] for g in result["summary"]["goals"].values()) else 1
