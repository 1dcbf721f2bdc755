"""Scenario ``scaling`` (issue 12): relay and latency on 1, 2, 4 and 10 shards of one box.

For each ``--shard-counts`` N, a fresh cluster from chatd's launcher (bench/shards.py; one
shard runs without Redis, as the launcher does), the same ``--relay-pairs`` 1:1 pairs of
users paired at random (seed ``--seed``), two windows:

1. **Relay**: the cluster scenario's closed loop (``bench.cluster._relay``: each sender keeps
   W un-acked sends, the relay scenario's client code) for each ``--windows``; best W.
2. **Latency**: the same pairs at a fixed ``--rate`` msgs/s in all (open loop,
   ``--duration`` s): send -> deliver and send -> ack percentiles.

Each row states its traffic mix: how many pairs are local (sender, recipient and sequencer on
one shard), how many cross shards, and by which path (``bench.cluster.kind_of``). With users
homed at random, the cross-shard share is ``1 - 1/N`` of pairs, so the ratio to one shard is
the cost of going distributed on the same hardware (2 cores here: every shard, Redis, the
load clients and the bench share them; no pinning).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import shards, traffic
from bench.cluster import ShardFleets, _relay, kind_of, quiesce, window
from bench.procs import CpuMeter
from bench.run import Run, settle
from bench.shards import Cluster

Pair = tuple[str, str]


def pairs_for(count: int, seed: int) -> tuple[list[Pair], list[str]]:
    users = [f"sg{i:05d}" for i in range(2 * count)]
    pool = list(users)
    random.Random(seed).shuffle(pool)
    return [(pool[2 * i], pool[2 * i + 1]) for i in range(count)], users


def redis_calls(cluster: Cluster) -> dict[str, int]:
    """Redis's ``INFO commandstats`` call counts (empty without a broker or redis-cli)."""
    url = cluster.discovery.broker_url
    cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if not url or not cli:
        return {}
    try:
        text = subprocess.run(
            [cli, "-u", url, "INFO", "commandstats"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            fields = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
            out[name.removeprefix("cmdstat_")] = int(fields.get("calls", 0))
    return out


def redis_memory(cluster: Cluster) -> dict[str, int]:
    """Redis ``used_memory`` and the length of every shard's stream (entries stay after XACK
    until the approximate MAXLEN trims them: this is what the streams hold)."""
    url = cluster.discovery.broker_url
    cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if not url or not cli:
        return {}

    def ask(*argv: str) -> str:
        try:
            return subprocess.run(
                [cli, "-u", url, *argv], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    out: dict[str, int] = {}
    for line in ask("INFO", "memory").splitlines():
        if line.startswith("used_memory:"):
            out["used_memory"] = int(line.split(":", 1)[1])
    lengths = [ask("XLEN", f"chatd:stream:{n}").strip() for n in cluster.names]
    out["stream_entries"] = sum(int(x) for x in lengths if x.isdigit())
    return out


def diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0)}


def mix(cluster: Cluster, pairs: list[Pair]) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for s, r in pairs:
        k = kind_of(cluster, s, r)
        kinds[k] = kinds.get(k, 0) + 1
    n = len(pairs) or 1
    cross = sum(v for k, v in kinds.items() if k.startswith("cross"))
    return {
        "kinds": kinds,
        "cross_shard_share": cross / n,  # sender and recipient homed on different shards
        "multi_shard_share": (n - kinds.get("local", 0)) / n,  # any hop to another shard
    }


def latency(
    run_: Run, args: argparse.Namespace, cluster: Cluster, pairs: list[Pair], tokens: dict[str, str]
) -> dict[str, Any]:
    fleets = ShardFleets(run_, cluster, args.clients)
    try:
        connect = fleets.connect(pairs, tokens)
        settle(args.settle)
        # What the shards and Redis burn with the pairs connected and silent (heartbeats only).
        meters = {n: CpuMeter([pid]).start() for n, pid in cluster.pids.items()}
        ops0 = redis_calls(cluster)
        time.sleep(args.idle_secs)
        idle = {n: m.stop()["cpu_pct"] for n, m in meters.items()}
        ops1 = redis_calls(cluster)
        idle_ops = diff(ops0, ops1)
        cmds = [
            {
                "cmd": "rate",
                "rate": share,
                "warmup": args.warmup,
                "duration": args.duration,
                "body": args.body,
                "drain": 10.0,
            }
            for share in traffic.share(args.rate, fleets.senders)
        ]
        r, _ = window(run_, cluster, fleets, cmds, args.warmup, args.duration)
        ops2 = redis_calls(cluster)
    finally:
        fleets.close()
    r["connect"] = connect
    r["idle_cpu_pct"] = idle
    r["redis_idle_calls_per_s"] = {k: v / args.idle_secs for k, v in idle_ops.items()}
    # Redis commands over the whole rate window (warm-up, measuring and drain) per message
    # sent in it: the open loop sends ``rate`` per second over warm-up + duration.
    sent = args.rate * (args.warmup + args.duration)
    window_ops = diff(ops1, ops2)
    r["redis_calls"] = window_ops
    r["redis_calls_per_msg"] = {k: v / sent for k, v in window_ops.items()} if sent else {}
    r["quiesce"] = quiesce(cluster)
    return r


def one(
    run_: Run, args: argparse.Namespace, n: int, pairs: list[Pair], users: list[str]
) -> dict[str, Any]:
    cluster = shards.start(run_.procs, run_.workdir, n, run_.config_text, f"s{n}")
    try:
        acc = shards.accounts(cluster, users)
        tokens = acc.pop("tokens")
        run_.log(f"scaling: {n} shard(s): {len(tokens)} accounts in {acc['secs']:.1f} s")
        out: dict[str, Any] = {"shards": n, "pids": cluster.pids, "accounts": acc}
        out["mix"] = mix(cluster, pairs)
        out["relay"] = _relay(run_, args, cluster, pairs, tokens)
        lat = latency(run_, args, cluster, pairs, tokens)
        d = lat["deliver_us"]
        run_.log(
            f"scaling: {n} shard(s) @ {args.rate:g}/s: deliver p50/p99/max "
            f"{d.get('p50', 0) / 1000:.2f}/{d.get('p99', 0) / 1000:.2f}/"
            f"{d.get('max', 0) / 1000:.1f} ms, servers {lat['server_cpu_pct']:.0f}%, "
            f"{lat['server_us_per_msg'] or 0:.0f} us/msg, others {lat['other_cpu_pct']:.0f}%, "
            f"errors {lat['error_codes'] or 0}"
        )
        lat.pop("ack_cdf", None)
        out["latency"] = lat
        out["redis_memory"] = redis_memory(cluster)
        out["log_problems"] = cluster.log_problems()
    finally:
        shards.stop(run_.procs, cluster)
    return out


def run(run_: Run, args: argparse.Namespace) -> dict[str, Any]:
    for flag in ("pin", "target", "profile"):
        if getattr(args, flag, None):
            raise SystemExit(f"chatd-bench scaling: --{flag} is not supported")
    if max(args.shard_counts) > 1 and not (
        shutil.which("redis-server") or shutil.which("valkey-server")
    ):
        return {"skipped": "redis-server not found (apt-get install -y redis-server)"}
    pairs, users = pairs_for(args.relay_pairs, args.seed)
    result: dict[str, Any] = {"targets": {}}
    for n in args.shard_counts:
        result["targets"][f"{n}_shards"] = one(run_, args, n, pairs, users)
        settle(args.settle)
    result["summary"] = summary(result)
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, t in result["targets"].items():
        best = max(t["relay"], key=lambda w: w["acked_per_s"]) if t["relay"] else None
        lat = t["latency"]
        rows[name] = {
            "shards": t["shards"],
            "cross_shard_share": t["mix"]["cross_shard_share"],
            "multi_shard_share": t["mix"]["multi_shard_share"],
            "kinds": t["mix"]["kinds"],
            "relay_acked_per_s": best["acked_per_s"] if best else None,
            "relay_delivered_per_s": best["delivered_per_s"] if best else None,
            "relay_best_window": best["window"] if best else None,
            "relay_us_per_msg": best["server_us_per_msg"] if best else None,
            "relay_server_cpu_pct": best["server_cpu_pct"] if best else None,
            "relay_client_cpu_pct": best["client_cpu_pct"] if best else None,
            "relay_p99_deliver_ms": best["deliver_us"].get("p99", 0) / 1000 if best else None,
            "relay_errors": best["error_codes"] if best else None,
            "relay_outbox_after": best["quiesce"]["outbox_pending"] if best else None,
            "rate": lat["sent_per_s"],
            "latency_deliver_ms": {
                k: lat["deliver_us"].get(k, 0) / 1000 for k in ("p50", "p90", "p99", "max")
            },
            "latency_ack_p99_ms": lat["ack_us"].get("p99", 0) / 1000,
            "latency_us_per_msg": lat["server_us_per_msg"],
            "latency_errors": lat["error_codes"],
            "other_cpu_pct": lat["other_cpu_pct"],
            "idle_cpu_pct": sum(lat["idle_cpu_pct"].values()),
            "redis_calls_per_msg": lat.get("redis_calls_per_msg"),
            "redis_idle_calls_per_s": lat.get("redis_idle_calls_per_s"),
            "redis_memory": t.get("redis_memory"),
        }
    one_ = next((r for r in rows.values() if r["shards"] == 1), None)
    if one_ and one_["relay_acked_per_s"]:
        for r in rows.values():
            r["relay_ratio_to_1"] = (r["relay_acked_per_s"] or 0) / one_["relay_acked_per_s"]
            if one_["latency_us_per_msg"] and r["latency_us_per_msg"]:
                r["cpu_per_msg_ratio_to_1"] = r["latency_us_per_msg"] / one_["latency_us_per_msg"]
    return {"by_shards": rows}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = sorted(
        result.get("summary", {}).get("by_shards", {}).values(), key=lambda r: r["shards"]
    )
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    ns = [r["shards"] for r in rows]
    acked = [r["relay_acked_per_s"] or 0 for r in rows]
    ax1.bar([str(n) for n in ns], acked, color="tab:blue")
    for i, r in enumerate(rows):
        ax1.text(
            i,
            acked[i],
            f"{acked[i]:,.0f}\n{r.get('relay_ratio_to_1', 0):.2f}x, "
            f"{r['cross_shard_share'] * 100:.0f}% cross",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax1.set_xlabel("shards (all on one 2-core box)")
    ax1.set_ylabel("relay acked msgs/s (closed loop, best W)")
    ax1.set_title("relay throughput vs shards (ratio to 1 shard, cross-shard pairs)", fontsize=9)
    ax1.grid(alpha=0.3, axis="y")
    ax1.set_ylim(0, max(acked or [1]) * 1.2)
    xs = list(range(len(ns)))
    for key, style in (("p50", "o-"), ("p99", "s-"), ("max", "^:")):
        ax2.plot(xs, [r["latency_deliver_ms"][key] for r in rows], style, label=key)
    ax2.set_yscale("log")
    ax2.set_xticks(xs, [str(n) for n in ns])
    ax2.set_xlabel("shards")
    ax2.set_ylabel("send -> deliver (ms)")
    rate = result.get("args", {}).get("rate")
    ax2.set_title(f"latency at {rate} msgs/s, pairs homed at random", fontsize=9)
    ax2.grid(alpha=0.3, which="both")
    ax2.legend()
    commit = (result.get("git") or {}).get("commit", "")[:8]
    fig.suptitle(f"chatd scaling  {result.get('started', '')}  commit {commit}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
