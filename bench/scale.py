"""Scenario ``scale`` (issue 12): many live connections on a local cluster, and reachability.

Redis + ``--shards`` shards from chatd's own launcher (``python -m chatd cluster --shards N
--port 0``, bench/shards.py), then ``--per-shard`` authenticated WebSocket connections on each
shard, in ``--steps`` equal steps, every one heartbeating (``--hb-interval`` s, WebSocket ping
by default; the contract's clients ping every 5-10 s). The idle connections are the density
scenario's load client (bench/loadclient.py, via bench/scaleclient.py which adds probes), one
``--clients-per-shard`` fleet per shard, each client on its own source address.

Accounts: argon2id makes a signup plus a login cost ~40 ms of server CPU, and the server will
not take cheaper parameters (``security.argon2_*`` has OWASP's floor), so each user holds
``--devices`` sessions (``limits.max_sessions_per_user`` is raised to match), as ``density``
does with its 100 users. Each shard gets ``ceil(per_shard / devices)`` users homed on it.

Measured at each step, per shard: connections held, RSS (``/proc/PID/status``), and Redis's
RSS; at the last step a ``--hb-secs`` CPU window (shards, Redis, clients, the whole machine).
Then reachability: ``--probes`` connections drawn uniformly at random from all those open;
for each, a sender connection on a random shard sends a 1:1 message to the connection's user
(``--probe-rate`` msgs/s in all); the bench checks that *that* connection received it and how
long it took (goal: each within 1 s). Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from bench import shards
from bench.cluster import kind_of, machine_jiffies, quiesce
from bench.fleet import Fleet, next_source
from bench.procs import ClientProc, CpuMeter, Procs, python, rss_kib
from bench.report import percentiles
from bench.run import Run, settle
from bench.scaling import diff, redis_calls
from bench.shards import Cluster
from bench.targets import BENCH_CONFIG, Target

GOAL_RSS_GIB = 1.5
GOAL_PROBE_MS = 1000.0
MALLOC_ENV = "MALLOC_MMAP_THRESHOLD_"

#: The bench's config (limits, accept rate and connection caps out of the way of the load),
#: with sessions per user raised so that a few users hold many connections (argon2id signups
#: are ~20 ms of CPU each).
SCALE_CONFIG = BENCH_CONFIG.replace("max_sessions_per_user = 1000", "max_sessions_per_user = {}")
assert SCALE_CONFIG != BENCH_CONFIG


class ScaleFleet(Fleet):
    """A :class:`Fleet` of ``bench.scaleclient`` processes (the load client plus probes)."""

    def __init__(
        self, procs: Procs, workdir: Path, target: Target, clients: int, max_secs: float
    ) -> None:
        self.procs = procs
        self.clients = []
        for i in range(clients):
            src = next_source()
            argv = [python(), "-m", "bench.scaleclient", "--host", target.host]
            argv += ["--port", str(target.port), "--path", target.path, "--src", src]
            argv += ["--max-secs", str(max_secs)]
            proc = ClientProc(f"scaleclient-{i}@{src}", argv, workdir / f"client-{src}.log")
            procs.add(proc)
            self.clients.append(proc)
        self.sessions = [0] * clients
        self.senders = [0] * clients


def config_text(run_: Run, devices: int) -> str:
    if getattr(run_.args, "chatd_config", None):
        return run_.config_text
    return SCALE_CONFIG.format(max(devices, 10))


def pick_users(cluster: Cluster, per_shard: int, devices: int) -> dict[str, list[str]]:
    """Per shard, ``ceil(per_shard / devices)`` user ids homed there, plus one sender each
    (the sender's name starts with ``sn``)."""
    need = math.ceil(per_shard / devices)
    by_home: dict[str, list[str]] = {n: [] for n in cluster.names}
    senders: dict[str, str] = {}
    i = 0
    while any(len(v) < need for v in by_home.values()) or len(senders) < len(by_home):
        u = f"sc{i:06d}"
        home = cluster.home(u)
        if len(by_home[home]) < need:
            by_home[home].append(u)
        s = f"sn{i:06d}"
        senders.setdefault(cluster.home(s), s)
        i += 1
        if i > 10_000_000:
            raise RuntimeError("could not find users for every shard")
    return {n: [senders[n], *users] for n, users in by_home.items()}


def connect_all(
    fleets: dict[str, ScaleFleet], plan: dict[str, list[tuple[str, str | None]]], concurrency: int
) -> dict[str, Any]:
    """Open every shard's sessions at once (each fleet spreads its share over its clients)."""
    told: list[tuple[str, ScaleFleet, list[int]]] = []
    t0 = time.monotonic()
    for name, sessions in plan.items():
        fleet = fleets[name]
        n = len(fleet.clients)
        parts: list[list[tuple[str, str | None]]] = [[] for _ in range(n)]
        for s in sessions:
            k = min(range(n), key=lambda j: fleet.sessions[j] + len(parts[j]))
            parts[k].append(s)
        fleet.tell(
            [
                {"cmd": "connect", "sessions": p, "concurrency": concurrency, "timeout": 60}
                for p in parts
            ]
        )
        told.append((name, fleet, [len(p) for p in parts]))
    out: dict[str, Any] = {"ok": 0, "failed": {}, "by_shard": {}}
    for name, fleet, sizes in told:
        replies = fleet.collect(900)
        ok = 0
        for i, r in enumerate(replies):
            fleet.sessions[i] += r["ok"]
            ok += r["ok"]
            for why, c in r["failed"].items():
                out["failed"][why] = out["failed"].get(why, 0) + c
        out["ok"] += ok
        out["by_shard"][name] = {"ok": ok, "wanted": sum(sizes)}
    out["secs"] = time.monotonic() - t0
    return out


def held(fleets: dict[str, ScaleFleet]) -> dict[str, dict[str, Any]]:
    return {name: f.status() for name, f in fleets.items()}


def sample(cluster: Cluster, fleets: dict[str, ScaleFleet]) -> dict[str, Any]:
    status = held(fleets)
    per = {
        n: {
            "conns": status[n]["open"],
            "rss_kib": rss_kib(pid),
            "pss_kib": pss_kib(pid),
            "fds": _fds(pid),
        }
        for n, pid in cluster.shard_pids.items()
    }
    return {
        "shards": per,
        "conns": sum(p["conns"] for p in per.values()),
        "redis_rss_kib": rss_kib(cluster.redis_pid) if cluster.redis_pid else 0,
        "launcher_rss_kib": rss_kib(cluster.proc.pid),
        "shards_rss_kib": sum(p["rss_kib"] for p in per.values()),
        "shards_pss_kib": sum(p["pss_kib"] for p in per.values()),
        "redis_pss_kib": pss_kib(cluster.redis_pid) if cluster.redis_pid else 0,
    }


def pss_kib(pid: int) -> int:
    """Proportional set size: RSS with shared pages (the interpreter and its libraries,
    mapped by every shard) divided among the processes that map them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_window(cluster: Cluster, fleets: dict[str, ScaleFleet], secs: float) -> dict[str, Any]:
    """CPU of every shard, Redis, the launcher and the load clients over ``secs``, with the
    pings sent meanwhile; ``machine`` is the whole machine's busy CPU (100 = one core)."""
    before = held(fleets)
    meters = {n: CpuMeter([pid]).start() for n, pid in cluster.pids.items()}
    launcher = CpuMeter([cluster.proc.pid]).start()
    clients = CpuMeter([p for f in fleets.values() for p in f.pids]).start()
    me = CpuMeter([os.getpid()]).start()
    busy0, all0 = machine_jiffies()
    time.sleep(secs)
    busy1, all1 = machine_jiffies()
    cpu = {n: m.stop() for n, m in meters.items()}
    bench_cpu = me.stop()["cpu_pct"]
    after = held(fleets)
    pings = sum(after[n]["pings"] - before[n]["pings"] for n in fleets)
    shard_s = sum(c["cpu_s"] for n, c in cpu.items() if n != "redis")
    out = {
        "secs": secs,
        "cpu_pct": {n: c["cpu_pct"] for n, c in cpu.items()},
        "shards_cpu_pct": sum(c["cpu_pct"] for n, c in cpu.items() if n != "redis"),
        "redis_cpu_pct": cpu.get("redis", {}).get("cpu_pct", 0.0),
        "launcher_cpu_pct": launcher.stop()["cpu_pct"],
        "client_cpu_pct": clients.stop()["cpu_pct"],
        "machine_cpu_pct": (busy1 - busy0) / max(1, all1 - all0) * 100.0 * (os.cpu_count() or 1),
        "pings": pings,
        "pongs": sum(after[n]["pongs"] - before[n]["pongs"] for n in fleets),
        "shard_us_per_ping": shard_s / pings * 1e6 if pings else None,
    }
    ours = sum(c["cpu_pct"] for c in cpu.values()) + out["launcher_cpu_pct"]
    ours += out["client_cpu_pct"] + bench_cpu
    # Everything else the machine ran meanwhile (other people's tests): a noise indicator.
    out["other_cpu_pct"] = max(0.0, out["machine_cpu_pct"] - ours)
    return out


def probe(
    run_: Run,
    args: argparse.Namespace,
    cluster: Cluster,
    fleets: dict[str, ScaleFleet],
    senders: dict[str, str],
) -> dict[str, Any]:
    """Message ``--probes`` random open connections from senders on random shards; check
    that each chosen connection got its message and how fast."""
    rng = random.Random(args.seed)
    owners: list[tuple[str, int, int, str]] = []  # shard, client index, position, user
    for name, fleet in fleets.items():
        for ci, r in enumerate(fleet.ask_all({"cmd": "users"}, 120)):
            for pos, user in enumerate(r["users"]):
                if user is not None and not user.startswith("sn"):
                    owners.append((name, ci, pos, user))
    picks = rng.sample(owners, min(args.probes, len(owners)))
    names = cluster.names
    sends: dict[str, list[list[Any]]] = {n: [] for n in names}
    meta: dict[int, dict[str, Any]] = {}
    for pid, (shard, ci, pos, user) in enumerate(picks):
        src = rng.choice(names)
        sends[src].append([pid, user])
        meta[pid] = {
            "shard": shard,
            "client": ci,
            "pos": pos,
            "cross": src != shard,
            "kind": kind_of(cluster, senders[src], user),
        }
    for fleet in fleets.values():  # forget anything received before
        fleet.ask_all({"cmd": "hits"}, 60)
    # Each shard's first client holds that shard's sender; rates split by share of sends.
    total = sum(len(v) for v in sends.values()) or 1
    for name, fleet in fleets.items():
        rate = args.probe_rate * len(sends[name]) / total
        cmds = [{"cmd": "probe", "sends": sends[name], "rate": max(rate, 1.0)}]
        cmds += [{"cmd": "probe", "sends": [], "rate": 1.0}] * (len(fleet.clients) - 1)
        fleet.tell(cmds)
    probe_secs = max(r["secs"] for f in fleets.values() for r in f.collect(600) if "secs" in r)
    time.sleep(args.probe_wait)
    got: dict[int, int] = {}
    other = 0
    acked = 0
    errors: dict[str, int] = {}
    for name, fleet in fleets.items():
        for ci, r in enumerate(fleet.ask_all({"cmd": "hits"}, 120)):
            acked += r["acked"]
            for code, c in r["errors"].items():
                errors[code] = errors.get(code, 0) + c
            for pid, pos, us in r["hits"]:
                m = meta.get(pid)
                if m and m["shard"] == name and m["client"] == ci and m["pos"] == pos:
                    got[pid] = us
                else:
                    other += 1  # the same user's other devices
    lat = list(got.values())
    within = sum(1 for us in lat if us <= GOAL_PROBE_MS * 1000)
    cross = [p for p, m in meta.items() if m["cross"]]
    kinds: dict[str, int] = {}
    for m in meta.values():
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
    out = {
        "probes": len(picks),
        "rate": args.probe_rate,
        "send_secs": probe_secs,
        "wait_s": args.probe_wait,
        "acked": acked,
        "errors": errors,
        "delivered_to_chosen": len(got),
        "within_1s": within,
        "missing": len(picks) - len(got),
        "other_devices_deliveries": other,
        "cross_shard": len(cross),
        "cross_shard_share": len(cross) / len(picks) if picks else 0.0,
        "cross_delivered": sum(1 for p in cross if p in got),
        "path_kinds": kinds,
        "latency_ms": {k: v / 1000 for k, v in percentiles(lat).items() if k != "n"},
        "latency_us_sorted": sorted(lat),
    }
    run_.log(
        f"scale: probes {len(got)}/{len(picks)} delivered to the chosen connection, "
        f"{within} within 1 s, {len(cross)} cross-shard, p50/p99/max "
        f"{out['latency_ms'].get('p50', 0):.1f}/{out['latency_ms'].get('p99', 0):.1f}/"
        f"{out['latency_ms'].get('max', 0):.1f} ms, acked {acked}, errors {errors or 0}"
    )
    return out


def run(run_: Run, args: argparse.Namespace) -> dict[str, Any]:
    for flag in ("pin", "target", "profile"):
        if getattr(args, flag, None):
            raise SystemExit(f"chatd-bench scale: --{flag} is not supported (see bench/README.md)")
    if not (shutil.which("redis-server") or shutil.which("valkey-server")):
        return {"skipped": "redis-server not found (apt-get install -y redis-server)"}
    if args.shards < 2:
        raise SystemExit("chatd-bench scale: --shards must be 2 or more")
    per_client = math.ceil(args.per_shard / args.clients_per_shard)
    if per_client > 19_000:
        raise SystemExit(
            f"chatd-bench scale: {per_client} connections per client process: over the "
            "20,000 open files per process; raise --clients-per-shard"
        )
    run_.config_text = config_text(run_, args.devices)
    result: dict[str, Any] = {
        "loadavg_before": _loadavg(),
        "chatd_config": run_.config_text,
        "targets": {},
    }
    # glibc's dynamic mmap threshold keeps freed argon2 buffers (19 MiB each) in the heap;
    # --malloc-mmap-threshold fixes the threshold for the shards (bench/README.md, issue 12).
    saved = os.environ.get(MALLOC_ENV)
    if args.malloc_mmap_threshold:
        os.environ[MALLOC_ENV] = str(args.malloc_mmap_threshold)
        result["shard_env"] = {MALLOC_ENV: str(args.malloc_mmap_threshold)}
    try:
        cluster = shards.start(run_.procs, run_.workdir, args.shards, run_.config_text, "scale")
    finally:
        if saved is None:
            os.environ.pop(MALLOC_ENV, None)
        else:
            os.environ[MALLOC_ENV] = saved
    fleets: dict[str, ScaleFleet] = {}
    try:
        settle(args.settle)
        base = sample_empty(cluster)
        result["base"] = base
        run_.log(f"scale: {args.shards} shards up, RSS before users {_gib(base['total_kib'])}")
        homes = pick_users(cluster, args.per_shard, args.devices)
        users = [u for us in homes.values() for u in us]
        acc = shards.accounts(cluster, users, workers=args.workers)
        tokens = acc.pop("tokens")
        result["accounts"] = acc | {"users": len(users), "devices_per_user": args.devices}
        run_.log(f"scale: {len(users)} accounts in {acc['secs']:.1f} s")
        for name in cluster.names:
            fleets[name] = ScaleFleet(
                run_.procs,
                run_.workdir,
                cluster.targets[name],
                args.clients_per_shard,
                args.max_secs,
            )
            fleets[name].ask_all(
                {"cmd": "heartbeat", "interval": args.hb_interval, "kind": args.hb_kind}, 30
            )
        senders = {n: us[0] for n, us in homes.items()}
        # Each shard's sender first (its first client), then its users' devices.
        first = {n: [(tokens[senders[n]], "probe")] for n in cluster.names}
        connect_all(fleets, first, args.concurrency)
        session_plan = {
            n: [(tokens[us[1 + i // args.devices]], None) for i in range(args.per_shard)]
            for n, us in homes.items()
        }
        settle(args.settle)
        after_base = sample(cluster, fleets)
        steps: list[dict[str, Any]] = []
        done = 0
        for k in range(1, args.steps + 1):
            upto = round(args.per_shard * k / args.steps)
            plan = {n: s[done:upto] for n, s in session_plan.items()}
            c = connect_all(fleets, plan, args.concurrency)
            done = upto
            settle(args.settle)
            s = sample(cluster, fleets)
            s["connect"] = c
            s["hellos_per_s"] = c["ok"] / c["secs"] if c["secs"] else None
            steps.append(s)
            run_.log(
                f"scale: step {k}: {s['conns']:,} open (+{c['ok']:,} in {c['secs']:.1f} s, "
                f"failed {c['failed'] or 0}), shards {_gib(s['shards_rss_kib'])}, "
                f"redis {_gib(s['redis_rss_kib'])}"
            )
        result["steps"] = steps
        result["before_users"] = after_base
        ops0 = redis_calls(cluster)
        result["heartbeat"] = hb = cpu_window(cluster, fleets, args.hb_secs)
        ops1 = redis_calls(cluster)
        hb["redis_calls_per_s"] = {k: v / args.hb_secs for k, v in diff(ops0, ops1).items()}
        hb["kind"] = args.hb_kind
        run_.log(
            f"scale: keep-alive CPU over {args.hb_secs:g} s: shards {hb['shards_cpu_pct']:.0f}%, "
            f"redis {hb['redis_cpu_pct']:.1f}%, clients {hb['client_cpu_pct']:.0f}%, "
            f"others {hb['other_cpu_pct']:.0f}%, {hb['pings']:,} pings"
        )
        if args.hb_compare and args.hb_compare != args.hb_kind:
            # The same connections with the other kind of heartbeat (a ``{"type":"ping"}``
            # frame answered by a ``pong`` frame costs more than a WebSocket ping).
            for fleet in fleets.values():
                fleet.ask_all(
                    {"cmd": "heartbeat", "interval": args.hb_interval, "kind": args.hb_compare},
                    30,
                )
            settle(args.hb_interval)
            result["heartbeat_compare"] = hb2 = cpu_window(cluster, fleets, args.hb_secs)
            hb2["kind"] = args.hb_compare
            run_.log(
                f"scale: keep-alive CPU with {args.hb_compare} pings: shards "
                f"{hb2['shards_cpu_pct']:.0f}%, clients {hb2['client_cpu_pct']:.0f}%, "
                f"{hb2['pings']:,} pings"
            )
        result["probe"] = probe(run_, args, cluster, fleets, senders)
        result["probe"]["redis_calls"] = diff(ops1, redis_calls(cluster))
        result["after"] = sample(cluster, fleets)
        status = held(fleets)
        result["status_after"] = {
            n: {k: s[k] for k in ("open", "lost", "close_reasons", "hb_late_max")}
            for n, s in status.items()
        }
        result["quiesce"] = quiesce(cluster, 15)
        result["health_after"] = {
            n: {k: h.get(k) for k in ("outbox_pending", "broker", "error")}
            for n, h in cluster.health().items()
        }
        result["log_problems"] = cluster.log_problems()
        result["targets"] = {f"{args.shards}_shards": {"shards": args.shards, "pids": cluster.pids}}
    finally:
        for fleet in fleets.values():
            try:
                fleet.close()
            except Exception as exc:  # keep closing the others
                run_.log(f"scale: closing a fleet: {exc}")
        shards.stop(run_.procs, cluster)
    result["summary"] = summary(result, args)
    return result


def sample_empty(cluster: Cluster) -> dict[str, Any]:
    per = {n: rss_kib(pid) for n, pid in cluster.shard_pids.items()}
    redis = rss_kib(cluster.redis_pid) if cluster.redis_pid else 0
    return {"shards_rss_kib": per, "redis_rss_kib": redis, "total_kib": sum(per.values()) + redis}


def summary(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if not result.get("steps"):
        return {}
    last = result["steps"][-1]
    empty = result["base"]["shards_rss_kib"]
    # Connections are measured from the RSS after the accounts were made (as density does):
    # the signups' argon2 buffers are not the connections' memory.
    base = {n: s["rss_kib"] for n, s in result["before_users"]["shards"].items()}
    hb = result["heartbeat"]
    per: dict[str, Any] = {}
    for name, s in last["shards"].items():
        conns = s["conns"]
        per[name] = {
            "connections": conns,
            "rss_mib": s["rss_kib"] / 1024,
            "rss_empty_mib": empty[name] / 1024,
            "rss_after_accounts_mib": base[name] / 1024,
            "kib_per_conn": (s["rss_kib"] - base[name]) / conns if conns else None,
            "kib_per_conn_all_in": s["rss_kib"] / conns if conns else None,
            "keepalive_cpu_pct": hb["cpu_pct"].get(name),
        }
    conns = last["conns"]
    total_kib = last["shards_rss_kib"] + last["redis_rss_kib"]
    probe = result.get("probe", {})
    growth = last["shards_rss_kib"] - sum(base.values())
    return {
        "shards": per,
        "total": {
            "connections": conns,
            "shards_rss_gib": last["shards_rss_kib"] / 2**20,
            "redis_rss_mib": last["redis_rss_kib"] / 1024,
            "launcher_rss_mib": last["launcher_rss_kib"] / 1024,
            "shards_rss_empty_gib": sum(empty.values()) / 2**20,
            "shards_rss_after_accounts_gib": sum(base.values()) / 2**20,
            "servers_plus_redis_gib": total_kib / 2**20,
            "servers_plus_redis_pss_gib": (last["shards_pss_kib"] + last["redis_pss_kib"]) / 2**20,
            "kib_per_conn": growth / conns if conns else None,
            "kib_per_conn_all_in": total_kib / conns if conns else None,
            "keepalive_cpu_pct": hb["shards_cpu_pct"] + hb["redis_cpu_pct"],
            "hb_interval_s": args.hb_interval,
            "us_per_ping": hb["shard_us_per_ping"],
            "hb_kind": hb.get("kind"),
            "compare": {
                k: result["heartbeat_compare"].get(k)
                for k in ("kind", "shards_cpu_pct", "client_cpu_pct", "shard_us_per_ping")
            }
            if "heartbeat_compare" in result
            else None,
            "lost": {n: s["lost"] for n, s in result.get("status_after", {}).items() if s["lost"]},
        },
        "goals": {
            "connections>=150000": {"value": conns, "met": conns >= 150_000},
            f"servers+redis_rss<={GOAL_RSS_GIB}GiB": {
                "value": total_kib / 2**20,
                "met": total_kib / 2**20 <= GOAL_RSS_GIB,
            },
            "probes>=2000_each_within_1s": {
                "value": probe.get("within_1s"),
                "probes": probe.get("probes"),
                "cross_shard": probe.get("cross_shard"),
                "met": bool(probe)
                and probe["probes"] >= 2000
                and probe["within_1s"] == probe["probes"],
            },
        },
    }


def _fds(pid: int) -> int:
    """Open files of a process (the machine allows 20,000 per process)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def _gib(kib: int) -> str:
    return f"{kib / 2**20:.2f} GiB"


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().strip()


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 5.5))
    steps = result.get("steps", [])
    base = {n: s["rss_kib"] for n, s in result.get("before_users", {}).get("shards", {}).items()}
    for name in base:
        xs = [0] + [s["shards"][name]["conns"] for s in steps]
        ys = [base[name] / 1024] + [s["shards"][name]["rss_kib"] / 1024 for s in steps]
        ax1.plot(xs, ys, "o-", ms=3, lw=1, label=name)
    ax1.set_xlabel("connections on the shard")
    ax1.set_ylabel("shard RSS (MiB)")
    ax1.set_title("connections vs RSS, per shard (0 = after the accounts)", fontsize=9)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)

    xs = [0] + [s["conns"] for s in steps]
    first = result.get("before_users", {})
    tot = [(first.get("shards_rss_kib", 0) + first.get("redis_rss_kib", 0)) / 2**20] + [
        (s["shards_rss_kib"] + s["redis_rss_kib"]) / 2**20 for s in steps
    ]
    red = [first.get("redis_rss_kib", 0) / 1024] + [s["redis_rss_kib"] / 1024 for s in steps]
    ax2.plot(xs, tot, "o-", label="all shards + Redis (GiB)")
    ax2.axhline(GOAL_RSS_GIB, color="red", ls=":", lw=1, label=f"goal {GOAL_RSS_GIB} GiB")
    ax2b = ax2.twinx()
    ax2b.plot(xs, red, "s--", color="tab:green", label="Redis (MiB)")
    ax2b.set_ylabel("Redis RSS (MiB)")
    ax2.set_xlabel("connections in all")
    ax2.set_ylabel("RSS (GiB)")
    ax2.set_ylim(bottom=0)
    ax2b.set_ylim(bottom=0)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc="upper left")
    ax2b.legend(fontsize=7, loc="lower right")
    ax2.set_title("total RSS vs connections", fontsize=9)

    lat = result.get("probe", {}).get("latency_us_sorted", [])
    if lat:
        n = len(lat)
        ax3.plot([v / 1000 for v in lat], [(i + 1) / n for i in range(n)])
        p = result["probe"]
        ax3.set_title(
            f"reachability: {p['delivered_to_chosen']}/{p['probes']} chosen connections, "
            f"{p['within_1s']} within 1 s, {p['cross_shard']} cross-shard",
            fontsize=9,
        )
    ax3.axvline(GOAL_PROBE_MS, color="red", ls=":", lw=1)
    ax3.set_xscale("log")
    ax3.set_xlabel("send -> delivered to the chosen connection (ms)")
    ax3.set_ylabel("fraction of probes")
    ax3.grid(alpha=0.3, which="both")
    commit = (result.get("git") or {}).get("commit", "")[:8]
    fig.suptitle(
        f"chatd scale: {result.get('args', {}).get('shards')} shards  "
        f"{result.get('started', '')}  commit {commit}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
