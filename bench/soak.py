"""Scenario ``soak``: a long steady load with connection churn; does the server stay flat?

One chatd, ``--connections`` connections attached: ``--pairs`` 1:1 pairs (a sender and a
receiver, distinct users), ``--groups`` groups of ``--members`` members (one sender each, all
members online) and, for the rest, idle connections held by ``--idle-users`` users (many
sessions per user, as ``density`` does: a password login costs ~20 ms of argon2, a token
``hello`` costs nothing like it). Every connection heartbeats (``--hb-interval``).

The senders send ``--rate`` msgs/s in all (open loop, round-robin, ``--body`` characters) until
``--total`` messages or ``--duration`` seconds, whichever comes first. ``--churn-pct`` percent
of all connections a minute, taken at random among the idle ones every ``--churn-every``
seconds, close (a WebSocket close) and reconnect with their token. Every ``--sample-secs``
the bench records:

- the server's ``RssAnon`` and ``RssFile`` (``/proc/PID/status``): the Python heap and what
  glibc keeps of it, versus the mapped LMDB pages;
- bytes on disk per stored message: ``data.mdb``'s allocated size and the map's used pages
  (``chatd_lmdb_used_bytes``) over the messages committed so far;
- the mean group-commit batch of the interval (messages acked / ``chatd_commit_batches_total``);
- send->deliver p50/p99 of the interval, and the achieved rate.

glibc's malloc tunables (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``, ...) set in the
bench's environment reach the server, and are recorded. ``--memdebug`` also asks the server's
admin socket for ``debug.memory`` (gc object counts, the sizes of per-user tables, glibc's heap
figures, tracemalloc's top growth when the server runs with ``CHATD_TRACEMALLOC``) at the
first sample and after the last one (then with a full gc pass and ``malloc_trim``, which tells
free heap held by malloc from live objects). JSON and PNG go to ``bench/results/soak/``.
Everything is bounded: ``--duration`` caps the traffic and the load clients' lifetime.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench import fanout, report, traffic
from bench import fleet as fleet_mod
from bench.procs import CpuMeter
from bench.run import Run, settle
from bench.targets import Target

STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")
METRICS = (
    "chatd_commit_batches_total",
    "chatd_commit_ops_total",
    "chatd_lmdb_used_bytes",
    "chatd_lmdb_map_bytes",
    "chatd_messages_accepted_total",
    "chatd_messages_delivered_total",
    "chatd_websockets",
    "chatd_online_users",
)


def add_parser(sub: Any) -> None:
    """``soak`` on the bench's command line (see ``bench/cli.py``)."""
    from bench import cli

    p = sub.add_parser(
        "soak", help="steady messages with 15k connections and churn: RSS, disk, p99 over time"
    )
    cli._common(p, targets="chatd", clients=2)
    p.add_argument("--connections", type=int, default=15000, help="connections held (15000)")
    p.add_argument("--pairs", type=int, default=500, help="1:1 pairs sending (500)")
    p.add_argument("--groups", type=int, default=10, help="groups with one sender each (10)")
    p.add_argument("--members", type=int, default=20, help="members per group (20)")
    p.add_argument(
        "--idle-users", type=int, default=100, help="users holding the idle connections (100)"
    )
    p.add_argument("--rate", type=float, default=3000.0, help="msgs/s in all (3000)")
    p.add_argument("--total", type=int, default=10_000_000, help="messages, then stop (10,000,000)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds at most (600)")
    p.add_argument(
        "--churn-pct", type=float, default=5.0, help="%% of connections reconnecting a minute (5)"
    )
    p.add_argument("--churn-every", type=float, default=60.0, help="seconds between churns (60)")
    p.add_argument("--sample-secs", type=float, default=5.0, help="seconds between samples (5)")
    p.add_argument("--body", type=int, default=100, help="message body characters (100)")
    p.add_argument(
        "--memdebug",
        action="store_true",
        help="ask the server's admin socket for debug.memory at the first and last sample",
    )
    p.add_argument(
        "--src-offset",
        type=int,
        default=0,
        help="load clients bind 127.0.0.(2 + offset + i): keeps concurrent runs apart (0)",
    )
    p.set_defaults(func=run, plot=plot, out=report.DEFAULT_OUT / "soak")


# -- server-side readings
def proc_status(pid: int) -> dict[str, int]:
    """The ``STATUS_FIELDS`` of ``/proc/PID/status`` in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name = line.split(":", 1)[0]
            if name in STATUS_FIELDS:
                out[name] = int(line.split()[1])
    return out


def scrape(target: Target) -> dict[str, float]:
    """The ``METRICS`` series of chatd's ``/metrics`` (unlabelled ones)."""
    assert target.http_url is not None
    try:
        with urllib.request.urlopen(target.http_url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    found = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)\s+([-+\d.eE]+)$", line)
        if m and m.group(1) in METRICS:
            found[m.group(1)] = float(m.group(2))
    return found


def data_file(run: Run) -> Path | None:
    found = sorted(run.workdir.glob("data-chatd-*/data.mdb"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def memdebug(run: Run, request: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The server's ``debug.memory`` answer over its admin socket (None if it has none)."""
    path = data_file(run)
    if path is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    try:
        sock.connect(str(path.parent / "admin.sock"))
        sock.sendall(json.dumps({"op": "debug.memory", **(request or {})}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    except OSError as exc:
        return {"error": str(exc)}
    finally:
        sock.close()
    answer: dict[str, Any] = json.loads(buf)
    return answer


def _cpu_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# -- the scenario
def names(args: argparse.Namespace) -> dict[str, Any]:
    senders, receivers = traffic.pair_names(args.pairs)
    members = [[f"sg{g:03d}m{m:03d}" for m in range(args.members)] for g in range(args.groups)]
    idle = [f"soakidle{i:04d}" for i in range(args.idle_users)]
    return {"senders": senders, "receivers": receivers, "members": members, "idle": idle}


def connect_all(
    run: Run, args: argparse.Namespace, target: Target, fleet: Any, tokens: dict[str, str]
) -> dict[str, Any]:
    who = names(args)
    assert target.http_url is not None
    channels = fanout.make_groups(target.http_url, tokens, who["members"])
    if isinstance(channels, str):
        raise RuntimeError(channels)
    pairs = traffic.connect_pairs(run, target, fleet, tokens, args.pairs)
    sessions: list[tuple[str, str | None]] = []
    for group, channel in zip(who["members"], channels, strict=True):
        sessions += [(tokens[u], channel if i == 0 else None) for i, u in enumerate(group)]
    groups = fleet.connect(sessions)
    busy = 2 * args.pairs + len(sessions)
    n_idle = max(0, args.connections - busy)
    idle_names = who["idle"]
    idle_sessions: list[tuple[str, str | None]] = [
        (tokens[idle_names[i % len(idle_names)]], None) for i in range(n_idle)
    ]
    idle = fleet.connect(idle_sessions, churnable=True) if idle_sessions else {"ok": 0}
    run.log(
        f"soak: {pairs['ok']} pair, {groups['ok']} group, {idle['ok']} idle connections "
        f"({args.pairs} pairs, {args.groups}x{args.members} groups)"
    )
    return {"pairs": pairs, "groups": groups, "idle": idle, "held": busy + n_idle}


def run(run_: Run, args: argparse.Namespace) -> dict[str, Any]:
    target = run_.start("chatd")
    try:
        who = names(args)
        users = who["senders"] + who["receivers"] + [u for g in who["members"] for u in g]
        users += who["idle"]
        t0 = time.monotonic()
        tokens = target.tokens(users)
        run_.log(f"soak: {len(tokens)} users in {time.monotonic() - t0:.0f} s")
        run_.pin_server(target)
        for _ in range(args.src_offset):
            fleet_mod.next_source()
        fleet = run_.fleet(target, args.clients, max_secs=args.duration + 900)
        try:
            connected = connect_all(run_, args, target, fleet, tokens)
            settle(args.settle)
            result = soak(run_, args, target, fleet, connected["held"])
            result["connect"] = connected
        finally:
            fleet.close()
    finally:
        run_.stop(target)
    return {"targets": {"chatd": {"label": target.label, **result}}, "summary": summary(result)}


def soak(
    run: Run, args: argparse.Namespace, target: Target, fleet: Any, held: int
) -> dict[str, Any]:
    assert target.pid is not None
    shares = traffic.share(args.rate, fleet.senders)
    totals = [int(x) for x in traffic.share(args.total, fleet.senders)]
    fleet.ask(
        [
            {
                "cmd": "soak_start",
                "rate": rate,
                "total": total,
                "secs": args.duration,
                "body": args.body,
            }
            for rate, total in zip(shares, totals, strict=True)
        ],
        30,
    )
    start = time.monotonic()
    churn_every = next_churn = args.churn_every
    per_churn = int(held * args.churn_pct / 100 * args.churn_every / 60)
    samples: list[dict[str, Any]] = []
    churns: list[dict[str, Any]] = []
    debug: dict[str, Any] = {}
    prev: dict[str, Any] = {"t": 0.0, "acked": 0, "delivered": 0, "metrics": scrape(target)}
    prev["busy"], prev["cpu"] = _cpu_busy(), CpuMeter([target.pid, *fleet.pids]).start()
    if args.memdebug:
        debug["first"] = memdebug(run)
    k = 0
    stopped: str | None = None
    while True:
        k += 1
        wake = start + k * args.sample_secs
        time.sleep(max(0.0, wake - time.monotonic()))
        now = time.monotonic() - start
        try:
            if now >= next_churn and per_churn:
                churns.append(churn(fleet, per_churn) | {"t": now})
                next_churn += churn_every
            replies = fleet.ask_all({"cmd": "soak_sample"}, 120)
        except RuntimeError as exc:  # a load client stopped answering: keep what was sampled
            run.log(f"soak: stopping early at t={now:.0f}s: {exc}")
            stopped = str(exc)
            break
        sample = one_sample(run, target, fleet, replies, prev, now)
        samples.append(sample)
        if k % max(1, round(30 / args.sample_secs)) == 0:
            run.log(
                f"soak t={now:.0f}s: {sample['acked_total']:,} msgs, "
                f"{sample['acked_per_s']:,.0f}/s, RssAnon {sample['rss_anon_kib'] / 1024:.1f} MiB,"
                f" RssFile {sample['rss_file_kib'] / 1024:.1f} MiB, "
                f"{sample.get('disk_bytes_per_msg') or 0:.0f} B/msg on disk, "
                f"p99 {sample['deliver_ms'].get('p99', 0):.2f} ms, "
                f"open {sample['open']}, other CPU {sample['other_cpu_pct']:.0f}%"
            )
        if not any(r["sending"] for r in replies) or now >= args.duration + 30:
            break
    if stopped is None:
        stop = fleet.ask_all({"cmd": "soak_stop", "drain": 10}, 60)
        settle(args.settle)
        final = one_sample(run, target, fleet, stop, prev, time.monotonic() - start)
        final["final"] = True
        samples.append(final)
    if args.memdebug:  # then what malloc_trim gives back: free heap held vs live objects
        debug["last"] = memdebug(run, {"collect": True, "trim": True})
    return {
        "held": held,
        # glibc tunables the server inherited (the bench passes its environment on)
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_"))},
        "samples": samples,
        "churns": churns,
        "stopped_early": stopped,
        "memdebug": debug or None,
    }


def churn(fleet: Any, count: int) -> dict[str, Any]:
    """``count`` idle connections close and reconnect, spread over the clients (the clients
    reconnect in the background; a client whose last churn still runs skips this one)."""
    n = len(fleet.clients)
    parts = [count // n + (1 if i < count % n else 0) for i in range(n)]
    replies = fleet.ask([{"cmd": "churn", "count": c} for c in parts], 60)
    return {
        "closed": sum(r["closed"] for r in replies),
        "busy_clients": sum(1 for r in replies if r.get("busy")),
    }


def one_sample(
    run: Run,
    target: Target,
    fleet: Any,
    replies: list[dict[str, Any]],
    prev: dict[str, Any],
    now: float,
) -> dict[str, Any]:
    """One row of the time series; ``prev`` (the last row's counters) is updated in place."""
    assert target.pid is not None
    status = proc_status(target.pid)
    metrics = scrape(target)
    acked = sum(r["acked"] for r in replies)
    delivered = sum(r["delivered"] for r in replies)
    deliver = [t for r in replies for t in r["deliver_us"]]
    ack = [t for r in replies for t in r["ack_us"]]
    secs = max(now - prev["t"], 1e-9)
    cpu = prev["cpu"].stop()  # its own window: from the last reading to this one
    busy = _cpu_busy()
    other = max(0.0, (busy - prev["busy"]) - cpu["cpu_s"]) / max(cpu["secs"], 1e-9) * 100
    row: dict[str, Any] = {
        "t": round(now, 2),
        "acked_total": acked,
        "delivered_total": delivered,
        "acked_per_s": (acked - prev["acked"]) / secs,
        "delivered_per_s": (delivered - prev["delivered"]) / secs,
        "rss_kib": status.get("VmRSS"),
        "rss_anon_kib": status.get("RssAnon"),
        "rss_file_kib": status.get("RssFile"),
        "deliver_ms": {k: v / 1000 for k, v in report.percentiles(deliver).items() if k != "n"},
        "ack_ms": {k: v / 1000 for k, v in report.percentiles(ack).items() if k != "n"},
        "deliveries_timed": len(deliver),
        "open": sum(r["open"] for r in replies),
        "pending": sum(r["pending"] for r in replies),
        "skipped": sum(r["skipped"] for r in replies),
        "errors": sum(r["errors"] for r in replies),
        "churned": sum(r["churned"] for r in replies),
        "reopened": sum(r["reopened"] for r in replies),
        "reopen_failed": sum(sum(r["reopen_failed"].values()) for r in replies),
        "reopen_secs_max": max(r["reopen_secs_max"] for r in replies),
        "lost": sum(sum(r["lost"].values()) for r in replies),
        "bench_cpu_pct": cpu["cpu_pct"],  # server + load clients
        "other_cpu_pct": other,
        "loadavg": os.getloadavg()[0],
        "metrics": metrics,
    }
    stored = metrics.get("chatd_messages_accepted_total") or acked
    path = data_file(run)
    if path is not None:
        st = path.stat()
        row["data_mdb_bytes"], row["data_mdb_alloc_bytes"] = st.st_size, st.st_blocks * 512
        if stored:
            row["disk_bytes_per_msg"] = st.st_blocks * 512 / stored
    if stored and metrics.get("chatd_lmdb_used_bytes"):
        row["used_bytes_per_msg"] = metrics["chatd_lmdb_used_bytes"] / stored
    pm = prev["metrics"]
    b0, b1 = pm.get("chatd_commit_batches_total"), metrics.get("chatd_commit_batches_total")
    o0, o1 = pm.get("chatd_commit_ops_total"), metrics.get("chatd_commit_ops_total")
    if b0 is not None and b1 is not None and b1 > b0:
        row["batches_per_s"] = (b1 - b0) / secs
        row["mean_batch_msgs"] = (acked - prev["acked"]) / (b1 - b0)
        if o0 is not None and o1 is not None:
            row["mean_batch_ops"] = (o1 - o0) / (b1 - b0)
    prev.update(
        t=now,
        acked=acked,
        delivered=delivered,
        metrics=metrics or pm,
        busy=busy,
        cpu=CpuMeter([target.pid, *fleet.pids]).start(),
    )
    return row


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """RssAnon after warm-up (the first fifth of the run, at least 60 s) vs at the end."""
    samples = [s for s in result["samples"] if s.get("rss_anon_kib")]
    if not samples:
        return {}
    last = samples[-1]
    warm_t = max(60.0, 0.2 * last["t"])
    warm = next((s for s in samples if s["t"] >= warm_t), samples[0])
    after = [s for s in samples if s["t"] >= warm["t"]]
    grow_kib = last["rss_anon_kib"] - warm["rss_anon_kib"]
    span = [s["rss_anon_kib"] for s in after]
    p99s = [s["deliver_ms"]["p99"] for s in samples if s["deliver_ms"].get("p99") is not None]
    msgs = last["acked_total"] - warm["acked_total"]
    out = {
        "messages": last["acked_total"],
        "secs": last["t"],
        "mean_rate": last["acked_total"] / last["t"] if last["t"] else None,
        "connections": result["held"],
        "reconnects": last.get("reopened", 0),
        "reconnect_failures": last.get("reopen_failed", 0),
        "reconnect_secs_max": last.get("reopen_secs_max"),
        "rss_anon_mib_first": samples[0]["rss_anon_kib"] / 1024,
        "rss_anon_mib_warm": warm["rss_anon_kib"] / 1024,
        "warm_t": warm["t"],
        "rss_anon_mib_last": last["rss_anon_kib"] / 1024,
        "rss_anon_mib_max_after_warm": max(span) / 1024,
        "rss_anon_growth_mib": grow_kib / 1024,
        "rss_anon_bytes_per_msg_after_warm": grow_kib * 1024 / msgs if msgs else None,
        "rss_file_mib_last": (last.get("rss_file_kib") or 0) / 1024,
        "disk_bytes_per_msg_last": last.get("disk_bytes_per_msg"),
        "used_bytes_per_msg_last": last.get("used_bytes_per_msg"),
        "p99_deliver_ms_median_of_samples": sorted(p99s)[len(p99s) // 2] if p99s else None,
        "p99_deliver_ms_max_of_samples": max(p99s) if p99s else None,
        "lost": last["lost"],
        "other_cpu_pct_mean": sum(s["other_cpu_pct"] for s in samples) / len(samples),
    }
    # RssAnon change over intervals where the server kept up (p99 under 1 s) vs the rest
    # (a backlog: queued sends, big commit batches); after warm-up only.
    steady = backlog = 0
    steady_msgs = 0
    for a, b in zip(after, after[1:], strict=False):
        delta = b["rss_anon_kib"] - a["rss_anon_kib"]
        if (b["deliver_ms"].get("p99") or 0) < 1000:
            steady += delta
            steady_msgs += b["acked_total"] - a["acked_total"]
        else:
            backlog += delta
    out["rss_anon_growth_mib_keeping_up"] = steady / 1024
    out["rss_anon_growth_mib_in_backlog"] = backlog / 1024
    out["messages_keeping_up"] = steady_msgs
    growth = (max(span) - warm["rss_anon_kib"]) / 1024
    out["goals"] = {
        "rss_anon_flat_within_5mib_after_warmup": {"value": growth, "met": growth <= 5.0}
    }
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    r = result["targets"]["chatd"]
    samples = [s for s in r["samples"] if not s.get("final")]
    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    ax = axes[0]
    ax.plot(t, [s["rss_anon_kib"] / 1024 for s in samples], label="RssAnon")
    ax.plot(t, [(s["rss_file_kib"] or 0) / 1024 for s in samples], label="RssFile (LMDB map)")
    ax.set_ylabel("MiB")
    ax.legend(fontsize=8)
    ax2 = ax.twinx()
    ax2.plot(t, [s["acked_total"] / 1e6 for s in samples], color="grey", ls=":", label="msgs")
    ax2.set_ylabel("messages stored (M)", color="grey")
    ax = axes[1]
    ax.plot(t, [s.get("disk_bytes_per_msg") for s in samples], label="data.mdb allocated / msgs")
    ax.plot(t, [s.get("used_bytes_per_msg") for s in samples], label="map pages in use / msgs")
    ax.set_ylabel("bytes per message")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(t, [s.get("mean_batch_msgs") for s in samples], label="mean batch (msgs)")
    ax.plot(t, [s["acked_per_s"] / 100 for s in samples], alpha=0.5, label="acked/s / 100")
    ax.set_ylabel("per commit")
    ax.legend(fontsize=8)
    ax = axes[3]
    ax.plot(t, [s["deliver_ms"].get("p99") for s in samples], label="p99 send->deliver")
    ax.plot(t, [s["deliver_ms"].get("p50") for s in samples], label="p50")
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.set_xlabel("minutes")
    ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    s = result.get("summary", {})
    commit = (result.get("git") or {}).get("commit", "")[:8]
    fig.suptitle(
        f"soak {result.get('started', '')} commit {commit}: {s.get('messages', 0):,} msgs, "
        f"{s.get('connections', 0):,} conns, {s.get('reconnects', 0):,} reconnects\n"
        f"RssAnon {s.get('rss_anon_mib_warm', 0):.1f} MiB after warm-up -> "
        f"{s.get('rss_anon_mib_last', 0):.1f} MiB at the end",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(paths: list[Path], png: Path) -> None:
    """One figure of several soak results (before/after): RssAnon, bytes per message, p99,
    each against messages stored. Labels: the file stems, or ``label=path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    for arg in paths:
        label, _, name = str(arg).rpartition("=")
        result = json.loads(Path(name).read_text())
        r = result["targets"]["chatd"]
        rows = [x for x in r["samples"] if not x.get("final")]
        commit = (result.get("git") or {}).get("commit", "")[:8]
        env = " ".join(f"{k}={v}" for k, v in sorted((r.get("malloc_env") or {}).items()))
        text = f"{label or Path(name).stem} ({commit}{', ' + env if env else ''})"
        m = [x["acked_total"] / 1e6 for x in rows]
        axes[0].plot(m, [x["rss_anon_kib"] / 1024 for x in rows], label=text)
        axes[1].plot(m, [x.get("used_bytes_per_msg") for x in rows], label=text)
        axes[2].plot(m, [x["deliver_ms"].get("p99") for x in rows], label=text, alpha=0.7)
    axes[0].set_ylabel("RssAnon (MiB)")
    axes[1].set_ylabel("LMDB pages in use / msgs (B)")
    axes[2].set_ylabel("p99 send->deliver (ms)")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("messages stored (millions)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("soak: before and after (issue 19)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--compare"]:  # python -m bench.soak --compare OUT.png [label=]A.json ...
        compare([Path(x) for x in sys.argv[3:]], Path(sys.argv[2]))
        raise SystemExit(0)
    from bench import cli

    raise SystemExit(cli.main(["soak", *sys.argv[1:]]))
