"""Scenario ``density``: how much server memory and CPU idle authenticated connections cost.

For each target: ``--users`` accounts (chatd: real signup + login over HTTP; each user then
holds many sessions, which the bench config allows), then connections in cumulative steps
(``--steps``). At each step, once every ``welcome`` is in and the server has settled: server
RSS (KiB per connection = RSS growth since before the first connection / connections held),
idle server CPU over ``--idle-secs``, and the connect rate (token ``hello``\\ s per second).
"Idle" includes liveness: every connection sends a heartbeat once per ``--hb-interval``
seconds (WebSocket ping by default), as chatd closes devices silent for 30 s; the last step
measures that CPU over a longer window (``--hb-secs``). A least-squares line
through (connections, RSS) is extrapolated to 200k and 1M connections.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.procs import CpuMeter
from bench.report import linear_fit
from bench.run import Run, each_target, settle
from bench.targets import Target

PROJECT = (200_000, 1_000_000)


def measure(run: Run, target: Target, client_pids: list[int], secs: float) -> dict[str, Any]:
    server = CpuMeter([target.pid]).start() if target.pid else None
    clients = CpuMeter(client_pids).start()
    time.sleep(secs)
    out: dict[str, Any] = {"client_cpu_pct": clients.stop()["cpu_pct"]}
    if server is not None:
        s = server.stop()
        out["server_cpu_pct"], out["server_sys_pct"] = s["cpu_pct"], s["sys_pct"]
        out["server_cpu_s"], out["secs"] = s["cpu_s"], s["secs"]
    return out


def one_target(run: Run, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    target = run.start(kind)
    try:
        names = [f"idle{i:04d}" for i in range(args.users)]
        t0 = time.monotonic()
        tokens = target.tokens(names)
        setup_s = time.monotonic() - t0
        run.log(f"{kind}: {len(tokens)} users ready in {setup_s:.1f} s")
        run.pin_server(target)
        fleet = run.fleet(target, args.clients)
        try:
            return measure_steps(run, args, target, fleet, tokens, names) | {"setup_s": setup_s}
        finally:
            fleet.close()
    finally:
        run.stop(target)


def measure_steps(
    run: Run,
    args: argparse.Namespace,
    target: Target,
    fleet: Any,
    tokens: dict[str, str],
    names: list[str],
) -> dict[str, Any]:
    settle(args.settle)
    rss0 = run.rss(target)
    steps: list[dict[str, Any]] = []
    made = 0
    for n in args.steps:
        sessions: list[tuple[str, str | None]] = [
            (tokens[names[i % len(names)]], None) for i in range(made, n)
        ]
        connect = fleet.connect(sessions, concurrency=args.concurrency)
        made = n
        new = len(sessions)
        run.log(
            f"{target.kind}: +{connect['ok']}/{new} connections in {connect['secs']:.1f} s, "
            f"{connect['open']} open, failed {connect['failed'] or 0}"
        )
        settle(args.settle)
        held = fleet.status()["open"]
        rss = run.rss(target)
        step: dict[str, Any] = {
            "connections": n,
            "held": held,
            "connect_failed": connect["failed"],
            "connect_s": connect["secs"],
            "hellos_per_s": connect["ok"] / connect["secs"] if connect["secs"] else None,
            "rss_kib": rss,
        }
        if rss is not None and rss0 is not None and held:
            step["kib_per_conn"] = (rss - rss0) / held
        step["idle"] = measure(run, target, fleet.pids, args.idle_secs)
        if n == args.steps[-1]:
            step["heartbeat"] = heartbeat(run, args, target, fleet)
        status = fleet.status()
        step["held_after"], step["lost"] = status["open"], status["lost"]
        step["close_reasons"] = status["close_reasons"]
        step["hb_late_max_s"] = status["hb_late_max"]
        run.log(
            f"{target.kind}: {held} held, RSS {rss} KiB, "
            f"{step.get('kib_per_conn', 0):.2f} KiB/conn, idle CPU "
            f"{step['idle'].get('server_cpu_pct', 0):.2f}%"
        )
        steps.append(step)
    return {"label": target.label, "rss0_kib": rss0, "steps": steps, "fit": fit(rss0, steps)}


def heartbeat(run: Run, args: argparse.Namespace, target: Target, fleet: Any) -> dict[str, Any]:
    """Server CPU over a longer window while every connection heartbeats: the liveness cost
    (pings, presence bookkeeping and sweeper together); per ping, an upper bound."""
    before = fleet.status()
    used = measure(run, target, fleet.pids, args.hb_secs)
    after = fleet.status()
    pings = after["pings"] - before["pings"]
    out = {
        "interval_s": args.hb_interval,
        "kind": args.hb_kind,
        "pings": pings,
        "pongs": after["pongs"] - before["pongs"],
        **used,
    }
    if "server_cpu_s" in used and pings:
        out["server_us_per_ping"] = used["server_cpu_s"] / pings * 1e6
    run.log(
        f"{target.kind}: heartbeats every {args.hb_interval:g} s: "
        f"server CPU {used.get('server_cpu_pct', 0):.2f}% over {args.hb_secs:g} s, {pings} pings"
    )
    return out


def fit(rss0: int | None, steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    points = [(s["held"], s["rss_kib"]) for s in steps if s.get("rss_kib") and s["held"]]
    if rss0 is None or not points:
        return None
    xs, ys = [0.0, *[float(p[0]) for p in points]], [float(rss0), *[float(p[1]) for p in points]]
    intercept, slope = linear_fit(xs, ys)
    return {
        "intercept_kib": intercept,
        "kib_per_conn": slope,
        "projected_gib": {str(n): (intercept + slope * n) / 2**20 for n in PROJECT},
    }


def run(run_: Run, args: argparse.Namespace) -> dict[str, Any]:
    return each_target(run_, args, one_target, summary)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Per target: KiB/conn and idle/heartbeat CPU at the largest step; chatd's goals."""
    rows: dict[str, Any] = {}
    for kind, r in results.items():
        last = r["steps"][-1]
        hb = last.get("heartbeat", {})
        rows[kind] = {
            "connections": last["held"],
            "kib_per_conn": last.get("kib_per_conn"),
            "fit_kib_per_conn": (r.get("fit") or {}).get("kib_per_conn"),
            "idle_cpu_pct": last["idle"].get("server_cpu_pct"),
            "heartbeat_cpu_pct": hb.get("server_cpu_pct"),
            "us_per_ping": hb.get("server_us_per_ping"),
            "hellos_per_s": max((s["hellos_per_s"] or 0) for s in r["steps"]),
            "projected_gib": (r.get("fit") or {}).get("projected_gib"),
        }
    goals: dict[str, Any] = {}
    chatd = rows.get("chatd")
    if chatd and chatd["kib_per_conn"] is not None:
        goals["idle_kib_per_conn<=9"] = {
            "value": chatd["kib_per_conn"],
            "met": chatd["kib_per_conn"] <= 9.0,
            "below_baselines": all(
                chatd["kib_per_conn"] < row["kib_per_conn"]
                for k, row in rows.items()
                if k != "chatd" and row["kib_per_conn"] is not None
            ),
        }
    if chatd and chatd["heartbeat_cpu_pct"] is not None:
        goals["heartbeat_cpu_pct<=5"] = {
            "value": chatd["heartbeat_cpu_pct"],
            "connections": chatd["connections"],
            "met": chatd["heartbeat_cpu_pct"] <= 5.0,
        }
    if chatd and chatd["hellos_per_s"]:
        goals["token_reconnects_per_s>=2000"] = {
            "value": chatd["hellos_per_s"],
            "met": chatd["hellos_per_s"] >= 2000,
        }
    return {"by_target": rows, "goals": goals}
