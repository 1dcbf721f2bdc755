"""Scenario ``latency``: send->ack and send->deliver at a fixed rate (open loop).

``--pairs`` pairs send ``--rates`` messages/s in total (round-robin over senders, each client
process taking its share), with ``--idle`` idle authenticated connections attached (held by
``--idle-users`` users). Every send made in the measuring window is timed; percentiles are
exact over all of them; the CDF is plotted.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import traffic
from bench.run import Run, each_target, settle


def one_target(run: Run, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    target = run.start(kind)
    try:
        senders, receivers = traffic.pair_names(args.pairs)
        idle_names = [f"idle{i:04d}" for i in range(args.idle_users)] if args.idle else []
        tokens = target.tokens(senders + receivers + idle_names)
        run.pin_server(target)
        fleet = run.fleet(target, args.clients)
        try:
            idle = None
            if args.idle:
                sessions: list[tuple[str, str | None]] = [
                    (tokens[idle_names[i % len(idle_names)]], None) for i in range(args.idle)
                ]
                idle = fleet.connect(sessions)
                run.log(f"{kind}: {idle['ok']} idle connections in {idle['secs']:.1f} s")
            connect = traffic.connect_pairs(run, target, fleet, tokens, args.pairs)
            settle(args.settle)
            rates = []
            for rate in args.rates:
                cmds = [
                    {
                        "cmd": "rate",
                        "rate": share,
                        "warmup": args.warmup,
                        "duration": args.duration,
                        "body": args.body,
                        "drain": 10,
                    }
                    for share in traffic.share(rate, fleet.senders)
                ]
                profile = run.profile_path(target, f"r{rate:g}")
                r = traffic.window(
                    run, target, fleet, cmds, args.warmup, args.duration, 10, profile
                )
                r.pop("ack_cdf", None)
                r["rate"] = rate
                rates.append(r)
                d, a = r["deliver_us"], r["ack_us"]
                run.log(
                    f"{kind} @ {rate:g}/s: deliver p50/p99/max {d.get('p50', 0) / 1000:.2f}/"
                    f"{d.get('p99', 0) / 1000:.2f}/{d.get('max', 0) / 1000:.1f} ms, ack p99 "
                    f"{a.get('p99', 0) / 1000:.2f} ms, "
                    f"server {r.get('server_cpu_pct', 0):.0f}% CPU, "
                    f"clients {r['client_cpu_pct']:.0f}%"
                )
                settle(args.settle)
            return {"label": target.label, "idle": idle, "connect": connect, "rates": rates}
        finally:
            fleet.close()
    finally:
        run.stop(target)


def run(run_: Run, args: argparse.Namespace) -> dict[str, Any]:
    return each_target(run_, args, one_target, lambda targets: summary(targets, args.idle))


def summary(results: dict[str, Any], idle: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for kind, r in results.items():
        for run in r["rates"]:
            d, a = run["deliver_us"], run["ack_us"]
            rows.setdefault(kind, {})[str(run["rate"])] = {
                "achieved_per_s": run["acked_per_s"],
                "deliver_ms": {k: d.get(k, 0) / 1000 for k in ("p50", "p90", "p99", "max")},
                "ack_ms": {k: a.get(k, 0) / 1000 for k in ("p50", "p90", "p99", "max")},
                "server_cpu_pct": run.get("server_cpu_pct"),
                "server_sys_pct": run.get("server_sys_pct"),
                "server_us_per_msg": run.get("server_us_per_msg"),
                "client_cpu_pct": run["client_cpu_pct"],
                "mean_batch": run.get("mean_batch"),
            }
    goals: dict[str, Any] = {}
    for rate, row in rows.get("chatd", {}).items():
        d = row["deliver_ms"]
        if float(rate) == 2000:
            goals["p99_deliver<=2ms@2000/s"] = {
                "value": d["p99"],
                "idle": idle,
                "met": d["p99"] <= 2.0,
            }
        if float(rate) == 5000:
            goals["p99_deliver<10ms@5000/s"] = {
                "value": d["p99"],
                "idle": idle,
                "met": d["p99"] < 10.0,
            }
            goals["max_deliver<50ms@5000/s"] = {
                "value": d["max"],
                "idle": idle,
                "met": d["max"] < 50.0,
            }
    return {"by_target": rows, "goals": goals}
