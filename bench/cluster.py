"""Scenario ``cluster`` (issue 11): chatd as shards on one Redis, launched by ``chatd cluster``.

Three measurements, each bounded in count and time:

1. **Latency by path** on a ``--shards`` cluster (2): ``--pairs`` 1:1 pairs per kind send
   ``--rate`` msgs/s in total (open loop, ``--duration`` s) and the recipient times each
   message from the send time in its body. One window per kind, so the kinds do not mix:

   - ``local``: sender, recipient and the channel's sequencer on one shard (the baseline);
   - ``cross_seq_sender``: homes differ, the sequencer is the sender's home (the message is
     committed there and relayed to the recipient's home over Redis Streams);
   - ``cross_forwarded``: homes differ, the sequencer is the recipient's home (the sender's
     shard forwards the send over the peer listener; the sequencer delivers locally and
     answers with the record for the sender's inbox);
   (A 1:1 channel is sequenced on one of its members' homes, so there is no third kind: two
   users on one shard are always ``local``.)

2. **CPU per message** of each window: CPU seconds of every shard process plus redis-server
   (``/proc/PID/stat`` user + system, over the measuring window) / acked messages; the ratio
   of each cross-shard kind to ``local`` at the same rate.

3. **Relay throughput**, 1 shard vs ``--shards``: ``--relay-pairs`` pairs homed at random
   (the same user pairs on both clusters), closed loop with the relay scenario's client code,
   for each ``--windows``; best window each; the ratio.

Each connection goes to its user's home shard (``Discovery.home``, checked against the
``ws_url`` login answers); the load clients are one fleet per shard on their own source
addresses (bench/fleet.py), ``--clients`` processes in all.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import shards, traffic
from bench.fleet import Fleet
from bench.procs import CpuMeter
from bench.report import percentiles
from bench.run import Run, settle
from bench.shards import Cluster, dm_channel
from bench.targets import commit_figures

KINDS = ("local", "cross_seq_sender", "cross_forwarded")
CROSS = ("cross_seq_sender", "cross_forwarded")
KIND_LABELS = {
    "local": "same shard (sender, recipient, sequencer)",
    "cross_seq_sender": "cross-shard, sequencer = sender's home",
    "cross_forwarded": "cross-shard, forwarded (sequencer = recipient's home)",
}
DRAIN = 10.0
Pair = tuple[str, str]


# -- users and pairs


def plan(cluster: Cluster, pairs: int, relay_pairs: int, seed: int) -> dict[str, Any]:
    """Pick users by home so that each latency kind has ``pairs`` pairs (users distinct within
    a kind; a user may serve several kinds, their windows run one after the other), plus
    ``relay_pairs`` pairs of users paired at random. Names are hashed, never signed up, until
    the kinds are full, so only the users used are created."""
    names = cluster.names
    if len(names) < 2:
        raise ValueError("the latency kinds need two or more shards")
    n = max(4 * pairs, 2 * relay_pairs, 16)
    while True:
        users = [f"cl{i:05d}" for i in range(n)]
        kinds = _kinds(cluster, users, pairs)
        if all(len(kinds[k]) >= pairs for k in KINDS):
            break
        n *= 2
    kinds = {k: v[:pairs] for k, v in kinds.items()}
    rng = random.Random(seed)
    pool = users[: 2 * relay_pairs]
    rng.shuffle(pool)
    relay = [(pool[2 * i], pool[2 * i + 1]) for i in range(relay_pairs)]
    used = sorted({u for ps in kinds.values() for p in ps for u in p} | set(pool))
    return {"kinds": kinds, "relay": relay, "users": used}


def kind_of(cluster: Cluster, sender: str, recipient: str) -> str:
    hs, hr = cluster.home(sender), cluster.home(recipient)
    if hs == hr:
        return "local"
    return (
        "cross_seq_sender"
        if cluster.home(dm_channel(sender, recipient)) == hs
        else "cross_forwarded"
    )


def _kinds(cluster: Cluster, users: list[str], pairs: int) -> dict[str, list[Pair]]:
    by_home: dict[str, list[str]] = {name: [] for name in cluster.names}
    for u in users:
        by_home[cluster.home(u)].append(u)
    out: dict[str, list[Pair]] = {k: [] for k in KINDS}
    # Cross-shard: the same pairs serve both cross kinds, oriented one way or the other.
    homes = list(by_home.values())
    for i in range(len(homes)):
        for j in range(i + 1, len(homes)):
            for a, b in zip(homes[i], homes[j], strict=False):
                seq = cluster.home(dm_channel(a, b))
                s, r = (a, b) if seq == cluster.home(a) else (b, a)
                out["cross_seq_sender"].append((s, r))
                out["cross_forwarded"].append((r, s))
    # Same home (always sequenced there): pairs within each shard, alternating shards.
    per_home = [list(zip(m[::2], m[1::2], strict=False)) for m in by_home.values()]
    out["local"] = _interleave(per_home)
    return out


def _interleave(lists: list[list[Pair]]) -> list[Pair]:
    out: list[Pair] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out += [x[i] for x in lists if i < len(x)]
    return out


# -- load clients, one fleet per shard


class ShardFleets:
    """One :class:`Fleet` per shard (connections go to their user's home shard); commands
    and replies span every client of every fleet, in a fixed order."""

    def __init__(self, run: Run, cluster: Cluster, clients: int) -> None:
        names = cluster.names
        self.cluster = cluster
        self.fleets: dict[str, Fleet] = {}
        counts = [
            clients // len(names) + (1 if i < clients % len(names) else 0)
            for i in range(len(names))
        ]
        try:
            for name, count in zip(names, counts, strict=True):
                self.fleets[name] = run.fleet(cluster.targets[name], max(1, count), max_secs=1800)
        except BaseException:
            self.close()
            raise

    @property
    def all(self) -> list[Fleet]:
        return list(self.fleets.values())

    @property
    def pids(self) -> list[int]:
        return [pid for f in self.all for pid in f.pids]

    @property
    def senders(self) -> list[int]:
        return [n for f in self.all for n in f.senders]

    @property
    def sessions(self) -> list[int]:
        return [n for f in self.all for n in f.sessions]

    def connect(self, pairs: list[Pair], tokens: dict[str, str]) -> dict[str, Any]:
        """The sender of each pair on its home shard (sending to the recipient), the recipient
        on its own home shard."""
        per: dict[str, list[tuple[str, str | None]]] = {n: [] for n in self.fleets}
        for s, r in pairs:
            per[self.cluster.home(s)].append((tokens[s], r))
            per[self.cluster.home(r)].append((tokens[r], None))
        out = {"ok": 0, "failed": {}, "secs": 0.0, "by_shard": {}}
        for name, sessions in per.items():
            if not sessions:
                continue
            r = self.fleets[name].connect(sessions)
            out["ok"] += r["ok"]
            out["secs"] = max(out["secs"], r["secs"])
            out["by_shard"][name] = len(sessions)
            for why, n in r["failed"].items():
                out["failed"][why] = out["failed"].get(why, 0) + n
        out["wanted"] = 2 * len(pairs)
        return out

    def tell(self, cmds: list[dict[str, Any]]) -> None:
        i = 0
        for f in self.all:
            f.tell(cmds[i : i + len(f.clients)])
            i += len(f.clients)

    def collect(self, timeout: float) -> list[dict[str, Any]]:
        return [r for f in self.all for r in f.collect(timeout)]

    def close(self) -> None:
        for f in self.all:
            try:
                f.close()
            except Exception as exc:  # keep closing the others
                print(f"bench: closing a fleet: {exc}", file=sys.stderr)


def machine_jiffies() -> tuple[int, int]:
    """(busy, all) jiffies of the whole machine so far, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def window(
    run: Run,
    cluster: Cluster,
    fleets: ShardFleets,
    cmds: list[dict[str, Any]],
    warmup: float,
    duration: float,
) -> tuple[dict[str, Any], list[int]]:
    """One timed window: the merged client figures, the CPU of every shard, Redis, the launcher
    and the clients over the measuring window, and the raw deliver latencies (us)."""
    fleets.tell(cmds)
    time.sleep(warmup)
    metrics0 = {n: t.metrics() for n, t in cluster.targets.items()}
    servers = {name: CpuMeter([pid]).start() for name, pid in cluster.pids.items()}
    launcher = CpuMeter([cluster.proc.pid]).start()
    clients = CpuMeter(fleets.pids).start()
    me = CpuMeter([os.getpid()]).start()
    busy0, all0 = machine_jiffies()
    time.sleep(duration)
    busy1, all1 = machine_jiffies()
    bench_cpu = me.stop()
    client_cpu = clients.stop()
    server_cpu = {name: m.stop() for name, m in servers.items()}
    launcher_cpu = launcher.stop()
    metrics1 = {n: t.metrics() for n, t in cluster.targets.items()}
    replies = fleets.collect(warmup + duration + DRAIN + 60)
    deliver = [t for r in replies for t in r["deliver_us"]]
    merged = traffic.merge(replies, duration)
    merged.pop("ack_cdf", None)
    expected = sum(fleets.sessions)
    if merged["open"] < expected:
        run.log(f"cluster: WARNING {expected - merged['open']} connections lost")
    cpu_s = sum(c["cpu_s"] for c in server_cpu.values())
    merged["server_cpu"] = {
        name: {"cpu_pct": c["cpu_pct"], "sys_pct": c["sys_pct"], "cpu_s": c["cpu_s"]}
        for name, c in server_cpu.items()
    }
    merged["server_cpu_pct"] = sum(c["cpu_pct"] for c in server_cpu.values())
    merged["server_cpu_s"] = cpu_s
    merged["launcher_cpu_pct"] = launcher_cpu["cpu_pct"]
    merged["client_cpu_pct"] = client_cpu["cpu_pct"]
    # Everything else the machine ran meanwhile (other people's tests, kernel threads): a
    # noise indicator. 100 = one core.
    machine_pct = (busy1 - busy0) / max(1, all1 - all0) * 100.0 * (os.cpu_count() or 1)
    ours = merged["server_cpu_pct"] + launcher_cpu["cpu_pct"] + client_cpu["cpu_pct"]
    merged["machine_cpu_pct"] = machine_pct
    merged["other_cpu_pct"] = max(0.0, machine_pct - ours - bench_cpu["cpu_pct"])
    merged["server_us_per_msg"] = cpu_s / merged["acked"] * 1e6 if merged["acked"] else None
    merged["commits"] = {
        n: commit_figures(metrics0[n], metrics1[n], 0, duration) for n in cluster.targets
    }
    for figures in merged["commits"].values():
        figures.pop("mean_batch", None)  # acked per shard is not known here
    merged["health_after"] = {
        n: {k: h.get(k) for k in ("outbox_pending", "broker", "error")}
        for n, h in cluster.health().items()
    }
    return merged, deliver


def quiesce(cluster: Cluster, max_secs: float = 30.0) -> dict[str, Any]:
    """Wait (at most ``max_secs``) until no shard has outbox records waiting for a
    confirmation, so that one window's backlog does not run into the next window."""
    t0 = time.monotonic()
    while True:
        pending = {n: h.get("outbox_pending") for n, h in cluster.health().items()}
        if not any(pending.values()) or time.monotonic() - t0 >= max_secs:
            return {"secs": time.monotonic() - t0, "outbox_pending": pending}
        time.sleep(0.5)


def _rate_kind(
    run: Run,
    args: argparse.Namespace,
    cluster: Cluster,
    kind: str,
    pairs: list[Pair],
    tokens: dict[str, str],
) -> tuple[dict[str, Any], list[int]]:
    fleets = ShardFleets(run, cluster, args.clients)
    try:
        connect = fleets.connect(pairs, tokens)
        if connect["failed"]:
            run.log(f"cluster {kind}: connect failures {connect['failed']}")
        settle(args.settle)
        cmds = [
            {
                "cmd": "rate",
                "rate": share,
                "warmup": args.warmup,
                "duration": args.duration,
                "body": args.body,
                "drain": DRAIN,
            }
            for share in traffic.share(args.rate, fleets.senders)
        ]
        r, deliver = window(run, cluster, fleets, cmds, args.warmup, args.duration)
    finally:
        fleets.close()
    r.update(kind=kind, label=KIND_LABELS[kind], pairs=len(pairs), rate=args.rate, connect=connect)
    d = r["deliver_us"]
    run.log(
        f"cluster {kind} @ {args.rate:g}/s: deliver p50/p99/p99.9/max "
        f"{d.get('p50', 0) / 1000:.2f}/{d.get('p99', 0) / 1000:.2f}/"
        f"{d.get('p99.9', 0) / 1000:.2f}/{d.get('max', 0) / 1000:.1f} ms, "
        f"ack p99 {r['ack_us'].get('p99', 0) / 1000:.2f} ms, "
        f"servers {r['server_cpu_pct']:.0f}% CPU ({_cpu_text(r)}), "
        f"{r['server_us_per_msg'] or 0:.0f} us/msg, clients {r['client_cpu_pct']:.0f}%, "
        f"others {r['other_cpu_pct']:.0f}%, errors {r['error_codes'] or 0}"
    )
    return r, deliver


def _relay(
    run: Run, args: argparse.Namespace, cluster: Cluster, pairs: list[Pair], tokens: dict[str, str]
) -> list[dict[str, Any]]:
    fleets = ShardFleets(run, cluster, args.clients)
    n = len(cluster.names)
    out = []
    try:
        connect = fleets.connect(pairs, tokens)
        if connect["failed"]:
            run.log(f"cluster relay x{n}: connect failures {connect['failed']}")
        settle(args.settle)
        for w in args.windows:
            cmd = {
                "cmd": "relay",
                "window": w,
                "warmup": args.warmup,
                "duration": args.relay_duration,
                "body": args.body,
                "drain": DRAIN,
            }
            cmds = [cmd] * len(fleets.pids)
            r, _ = window(run, cluster, fleets, cmds, args.warmup, args.relay_duration)
            r.pop("deliver_cdf", None)
            r["window"] = w
            r["connect"] = connect
            out.append(r)
            r["quiesce"] = quiesce(cluster)
            run.log(
                f"cluster relay {n} shard(s) W={w}: {r['acked_per_s']:,.0f} acked/s, "
                f"{r['delivered_per_s']:,.0f} delivered/s, servers {r['server_cpu_pct']:.0f}% "
                f"({_cpu_text(r)}), clients {r['client_cpu_pct']:.0f}%, "
                f"others {r['other_cpu_pct']:.0f}%, "
                f"{r['server_us_per_msg'] or 0:.0f} us/msg, p99 deliver "
                f"{r['deliver_us'].get('p99', 0) / 1000:.1f} ms, errors {r['error_codes'] or 0}"
            )
            settle(args.settle)
    finally:
        fleets.close()
    return out


def _cpu_text(r: dict[str, Any]) -> str:
    return " ".join(f"{name} {c['cpu_pct']:.0f}%" for name, c in r["server_cpu"].items())


# -- the scenario


def run(run_: Run, args: argparse.Namespace) -> dict[str, Any]:
    for flag in ("pin", "target", "profile"):
        if getattr(args, flag, None):
            raise SystemExit(
                f"chatd-bench cluster: --{flag} is not supported (see bench/README.md)"
            )
    if args.shards > 1 and not (shutil.which("redis-server") or shutil.which("valkey-server")):
        return {"skipped": "redis-server not found (apt-get install -y redis-server)"}
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"chatd-bench cluster: unknown --kinds {unknown} (known: {KINDS})")
    if args.shards < 2:
        raise SystemExit("chatd-bench cluster: --shards must be 2 or more")
    result: dict[str, Any] = {"targets": {}, "kinds": {}, "loadavg_before": _loadavg()}
    raw: dict[str, list[int]] = {}
    cluster = shards.start(
        run_.procs, run_.workdir, args.shards, run_.config_text, f"n{args.shards}"
    )
    try:
        run_.log(
            f"cluster: {args.shards} shards up: {cluster.shard_pids}, redis {cluster.redis_pid}"
        )
        p = plan(cluster, args.pairs, args.relay_pairs, args.seed)
        acc = shards.accounts(cluster, p["users"])
        tokens = acc.pop("tokens")
        run_.log(f"cluster: {len(tokens)} accounts in {acc['secs']:.1f} s")
        result["accounts"] = acc
        kinds: dict[str, Any] = {}
        for kind in args.kinds:
            kinds[kind], raw[kind] = _rate_kind(run_, args, cluster, kind, p["kinds"][kind], tokens)
            kinds[kind]["quiesce"] = q = quiesce(cluster)
            if q["secs"] > 1:
                run_.log(f"cluster: outbox drained in {q['secs']:.1f} s: {q['outbox_pending']}")
            settle(args.settle)
        result["kinds"] = kinds
        mix: dict[str, int] = {}
        for s, r in p["relay"]:
            k = kind_of(cluster, s, r)
            mix[k] = mix.get(k, 0) + 1
        relay_n = _relay(run_, args, cluster, p["relay"], tokens) if p["relay"] else []
        result["targets"][f"{args.shards}_shards"] = {
            "shards": args.shards,
            "pids": cluster.pids,
            "relay_pair_kinds": mix,
            "windows": relay_n,
            "log_problems": cluster.log_problems(),
        }
    finally:
        shards.stop(run_.procs, cluster)
    if not p["relay"]:  # --relay-pairs 0: latency and CPU only
        result["summary"] = summary(result, raw, args)
        return result
    one = shards.start(run_.procs, run_.workdir, 1, run_.config_text, "n1")
    try:
        acc1 = shards.accounts(one, p["users"])
        tokens1 = acc1.pop("tokens")
        run_.log(f"cluster: 1 shard: {len(tokens1)} accounts in {acc1['secs']:.1f} s")
        relay_1 = _relay(run_, args, one, p["relay"], tokens1)
        result["targets"]["1_shard"] = {
            "shards": 1,
            "pids": one.pids,
            "windows": relay_1,
            "log_problems": one.log_problems(),
        }
    finally:
        shards.stop(run_.procs, one)
    result["summary"] = summary(result, raw, args)
    return result


def summary(
    result: dict[str, Any], raw: dict[str, list[int]], args: argparse.Namespace
) -> dict[str, Any]:
    kinds = result["kinds"]
    rows: dict[str, Any] = {}
    for kind, r in kinds.items():
        rows[kind] = {
            "label": r["label"],
            "achieved_per_s": r["acked_per_s"],
            "deliver_ms": _ms(r["deliver_us"]),
            "ack_ms": _ms(r["ack_us"]),
            "server_us_per_msg": r["server_us_per_msg"],
            "server_cpu_pct": r["server_cpu_pct"],
            "client_cpu_pct": r["client_cpu_pct"],
            "errors": r["error_codes"],
        }
    goals: dict[str, Any] = {}
    cross = [k for k in CROSS if k in kinds]
    if cross:
        pooled = percentiles([t for k in cross for t in raw[k]])
        rows["cross_pooled"] = {"deliver_ms": _ms(pooled), "kinds": cross}
        worst = max(rows[k]["deliver_ms"]["p99"] for k in cross)
        goals["cross_p99_deliver<=5ms"] = {
            "value": rows["cross_pooled"]["deliver_ms"]["p99"],
            "worst_kind": worst,
            "rate": args.rate,
            "met": worst <= 5.0,
        }
    if "local" in kinds and cross and kinds["local"]["server_us_per_msg"]:
        base = kinds["local"]["server_us_per_msg"]
        cpu_s = sum(kinds[k]["server_cpu_s"] for k in cross)
        acked = sum(kinds[k]["acked"] for k in cross)
        pooled_us = cpu_s / acked * 1e6 if acked else 0.0
        ratios = {k: (kinds[k]["server_us_per_msg"] or 0) / base for k in kinds}
        ratios["cross_pooled"] = pooled_us / base
        goals["cpu_per_cross_msg<=2x_local"] = {
            "value": ratios["cross_pooled"],
            "worst_kind": max(ratios[k] for k in cross),
            "local_us": base,
            "cross_us": pooled_us,
            "met": max(ratios[k] for k in cross) <= 2.0,
        }
        rows["cpu_ratio_to_local"] = ratios
    relay: dict[str, Any] = {}
    for name, t in result["targets"].items():
        if not t["windows"]:
            continue
        best = max(t["windows"], key=lambda w: w["acked_per_s"])
        relay[name] = {
            "acked_per_s": best["acked_per_s"],
            "delivered_per_s": best["delivered_per_s"],
            "best_window": best["window"],
            "server_cpu_pct": best["server_cpu_pct"],
            "server_cpu": {n: c["cpu_pct"] for n, c in best["server_cpu"].items()},
            "client_cpu_pct": best["client_cpu_pct"],
            "launcher_cpu_pct": best["launcher_cpu_pct"],
            "server_us_per_msg": best["server_us_per_msg"],
            "p99_deliver_ms": best["deliver_us"].get("p99", 0) / 1000,
            "errors": best["error_codes"],
        }
    many = f"{args.shards}_shards"
    if many in relay and "1_shard" in relay and relay["1_shard"]["acked_per_s"]:
        ratio = relay[many]["acked_per_s"] / relay["1_shard"]["acked_per_s"]
        relay["ratio"] = ratio
        goals[f"relay_{args.shards}_shards>=1.7x_1"] = {
            "value": ratio,
            "cores": _cores(),
            "met": ratio >= 1.7,
        }
    return {"latency": rows, "relay": relay, "goals": goals}


def _ms(p: dict[str, Any]) -> dict[str, float]:
    return {k: p.get(k, 0) / 1000 for k in ("p50", "p90", "p99", "p99.9", "max")}


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().strip()


def _cores() -> int:
    return len(os.sched_getaffinity(0))


# -- the plot


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 5.5))
    colors = {
        "local": "tab:blue",
        "cross_seq_sender": "tab:orange",
        "cross_forwarded": "tab:red",
    }
    for kind, r in result.get("kinds", {}).items():
        cdf = r.get("deliver_cdf") or []
        if not cdf:
            continue
        p99 = r["deliver_us"].get("p99", 0) / 1000
        ax1.plot(
            [c[0] / 1000 for c in cdf],
            [c[1] for c in cdf],
            color=colors.get(kind),
            label=f"{r['label']} (p99 {p99:.2f} ms)",
        )
    ax1.axvline(5.0, color="grey", ls=":", lw=1)
    ax1.set_xscale("log")
    ax1.set_xlabel("send -> deliver (ms)")
    ax1.set_ylabel("fraction of messages")
    ax1.set_ylim(0, 1.01)
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=7, loc="lower right")
    rate = result.get("args", {}).get("rate")
    ax1.set_title(f"latency CDF at {rate:g} msgs/s (goal: cross p99 <= 5 ms)", fontsize=9)

    kinds = list(result.get("kinds", {}))
    us = [result["kinds"][k]["server_us_per_msg"] or 0 for k in kinds]
    ax2.bar(range(len(kinds)), us, color=[colors.get(k) for k in kinds])
    for i, v in enumerate(us):
        ax2.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax2.set_xticks(range(len(kinds)), [k.replace("_", "\n") for k in kinds], fontsize=7)
    ax2.set_ylabel("CPU us per message (shards + redis)")
    ax2.set_title("CPU per message at the same rate (goal: cross <= 2x local)", fontsize=9)
    ax2.grid(alpha=0.3, axis="y")

    names = list(result.get("targets", {}))
    for name in sorted(names, key=lambda n: result["targets"][n]["shards"]):
        t = result["targets"][name]
        ws = [w["window"] for w in t["windows"]]
        ax3.plot(
            ws,
            [w["acked_per_s"] for w in t["windows"]],
            "o-",
            label=f"{t['shards']} shard(s), acked",
        )
    ax3.set_xscale("log", base=2)
    ax3.set_xlabel("window (un-acked sends per sender)")
    ax3.set_ylabel("acked msgs/s")
    ax3.set_ylim(bottom=0)
    ax3.grid(alpha=0.3)
    ax3.legend(fontsize=8)
    ratio = result.get("summary", {}).get("relay", {}).get("ratio")
    ax3.set_title(
        f"relay, pairs homed at random; ratio {ratio or 0:.2f}x (goal 1.7x; {_cores()} cores)",
        fontsize=9,
    )
    commit = (result.get("git") or {}).get("commit", "")[:8]
    fig.suptitle(f"chatd cluster  {result.get('started', '')}  commit {commit}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
