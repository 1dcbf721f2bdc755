"""Scenario ``relay``: saturated 1:1 relay throughput, chatd against the bare baselines.

``--pairs`` online pairs (a sender and a receiver connection each, distinct users). Each sender
keeps ``W`` un-acked sends in flight for every ``W`` in ``--windows``; on chatd an ack means the
message and both inbox entries are durable in LMDB. Over the measuring window: accepted (acked)
msgs/s, delivered msgs/s, server and client CPU, server CPU per message, send->ack and
send->deliver percentiles. The best window per target is its saturated throughput; the report
gives chatd / baseline ratios.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import traffic
from bench.run import Run, each_target, settle

DROP = ("deliver_cdf", "ack_cdf")


def one_target(run: Run, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    target = run.start(kind)
    try:
        senders, receivers = traffic.pair_names(args.pairs)
        tokens = target.tokens(senders + receivers)
        run.pin_server(target)
        fleet = run.fleet(target, args.clients)
        try:
            connect = traffic.connect_pairs(run, target, fleet, tokens, args.pairs)
            settle(args.settle)
            windows = []
            for w in args.windows:
                cmd = {
                    "cmd": "relay",
                    "window": w,
                    "warmup": args.warmup,
                    "duration": args.duration,
                    "body": args.body,
                    "drain": 10,
                }
                r = traffic.window(
                    run,
                    target,
                    fleet,
                    [cmd] * len(fleet.clients),
                    args.warmup,
                    args.duration,
                    10,
                    run.profile_path(target, f"w{w}"),
                )
                for key in DROP:
                    r.pop(key, None)
                r["window"] = w
                windows.append(r)
                run.log(
                    f"{kind}: W={w}: {r['acked_per_s']:,.0f} acked/s, "
                    f"{r['delivered_per_s']:,.0f} delivered/s, "
                    f"server {r.get('server_cpu_pct', 0):.0f}% CPU, "
                    f"clients {r['client_cpu_pct']:.0f}%, "
                    f"p99 deliver {r['deliver_us'].get('p99', 0) / 1000:.1f} ms, "
                    f"errors {r['error_codes'] or 0}"
                    + (f", mean batch {r['mean_batch']:.0f}" if r.get("mean_batch") else "")
                )
                settle(args.settle)
            return {"label": target.label, "connect": connect, "windows": windows}
        finally:
            fleet.close()
    finally:
        run.stop(target)


def run(run_: Run, args: argparse.Namespace) -> dict[str, Any]:
    return each_target(run_, args, one_target, summary)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    rows = {}
    for kind, r in results.items():
        best = max(r["windows"], key=lambda w: w["acked_per_s"])
        rows[kind] = {
            "saturated_acked_per_s": best["acked_per_s"],
            "delivered_per_s": best["delivered_per_s"],
            "best_window": best["window"],
            "server_cpu_pct": best.get("server_cpu_pct"),
            "server_sys_pct": best.get("server_sys_pct"),
            "server_us_per_msg": best.get("server_us_per_msg"),
            "client_cpu_pct": best["client_cpu_pct"],
            "p99_deliver_ms": best["deliver_us"].get("p99", 0) / 1000,
            "mean_batch": best.get("mean_batch"),
            "lmdb_commits_per_s": best.get("lmdb_commits_per_s"),
        }
    ratios = {}
    goals = {}
    if "chatd" in rows:
        chatd = rows["chatd"]["saturated_acked_per_s"]
        for kind in ("trio", "websockets"):
            if kind in rows and rows[kind]["saturated_acked_per_s"]:
                ratios[f"chatd/{kind}"] = chatd / rows[kind]["saturated_acked_per_s"]
        if "chatd/websockets" in ratios:
            goals["relay_vs_websockets>=1.0"] = {
                "value": ratios["chatd/websockets"],
                "met": ratios["chatd/websockets"] >= 1.0,
            }
        if "chatd/trio" in ratios:
            goals["relay_vs_trio>=1.1"] = {
                "value": ratios["chatd/trio"],
                "met": ratios["chatd/trio"] >= 1.1,
            }
    return {"by_target": rows, "ratios": ratios, "goals": goals}
