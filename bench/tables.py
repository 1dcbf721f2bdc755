"""Markdown tables of the results on disk, for bench/README.md.

    python -m bench.tables [bench/results]

One row per (run, target), newest run last, from every ``<scenario>-<timestamp>.json``; the
run column gives the git commit measured (``+``: chatd/ or storage/ had uncommitted changes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.report import DEFAULT_OUT


def _f(value: Any, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def density(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = [
        "| run | server | conns held | KiB/conn | idle CPU | CPU, each conn pinging every N s "
        "| us/ping | hellos/s | RSS @200k / 1M |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stamp, r in runs:
        every = r["args"].get("hb_interval", 30.0)
        for kind, row in r["summary"]["by_target"].items():
            proj = row.get("projected_gib") or {}
            gib = f"{_f(proj.get('200000'), '.1f')} / {_f(proj.get('1000000'), '.1f')} GiB"
            out.append(
                f"| {stamp} | {kind} | {row['connections']:,} | {_f(row['kib_per_conn'], '.2f')} "
                f"| {_f(row['idle_cpu_pct'], '.2f')}% "
                f"| {_f(row['heartbeat_cpu_pct'], '.2f')}% (N={every:g}) "
                f"| {_f(row['us_per_ping'], '.0f')} | {_f(row['hellos_per_s'])} | {gib} |"
            )
    return out


def relay(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = [
        "| run | server | acked msgs/s (best W) | delivered/s | server CPU (sys) | us/msg "
        "| client CPU | mean batch | chatd / this |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stamp, r in runs:
        rows = r["summary"]["by_target"]
        chatd = (rows.get("chatd") or {}).get("saturated_acked_per_s")
        for kind, row in rows.items():
            ratio = chatd / row["saturated_acked_per_s"] if chatd and kind != "chatd" else None
            out.append(
                f"| {stamp} | {kind} | {_f(row['saturated_acked_per_s'])} (W={row['best_window']}) "
                f"| {_f(row['delivered_per_s'])} | {_f(row['server_cpu_pct'])}% "
                f"({_f(row.get('server_sys_pct'))}%) | {_f(row['server_us_per_msg'], '.1f')} "
                f"| {_f(row['client_cpu_pct'])}% | {_f(row.get('mean_batch'))} "
                f"| {_f(ratio, '.2f')} |"
            )
    return out


def latency(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = [
        "| run | server | rate | idle conns | deliver p50 / p90 / p99 / max (ms) | ack p99 (ms) "
        "| server CPU (sys) | us/msg | client CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stamp, r in runs:
        idle = r["args"].get("idle", 0)
        for kind, rates in r["summary"]["by_target"].items():
            for rate, row in rates.items():
                d = row["deliver_ms"]
                out.append(
                    f"| {stamp} | {kind} | {float(rate):,.0f}/s | {idle:,} "
                    f"| {d['p50']:.2f} / {d['p90']:.2f} / {d['p99']:.2f} / {d['max']:.1f} "
                    f"| {row['ack_ms']['p99']:.2f} | {_f(row['server_cpu_pct'])}% "
                    f"({_f(row.get('server_sys_pct'))}%) | {_f(row['server_us_per_msg'])} "
                    f"| {_f(row['client_cpu_pct'])}% |"
                )
    return out


def logins(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = [
        "| run | password logins/s | token reconnects/s | chat p99 quiet "
        "| chat p99 during logins |",
        "|---|---|---|---|---|",
    ]
    for stamp, r in runs:
        s = r["summary"]["chatd"]
        out.append(
            f"| {stamp} | {s['password_logins_per_s']:.0f} | {_f(s['token_reconnects_per_s'])} "
            f"| {s['chat_p99_ms_quiet']:.2f} ms | {s['chat_p99_ms_during_logins']:.2f} ms |"
        )
    return out


def fanout(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = [
        "| run | groups x members | group msgs/s (best W) | deliveries/s | server CPU "
        "| client CPU | p99 deliver | mean batch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stamp, r in runs:
        row, a = r["summary"]["by_target"]["chatd"], r["args"]
        out.append(
            f"| {stamp} | {a['groups']} x {a['members']} | {_f(row['group_msgs_per_s'])} "
            f"(W={row['best_window']}) | {_f(row['deliveries_per_s'])} "
            f"| {_f(row['server_cpu_pct'])}% | {_f(row['client_cpu_pct'])}% "
            f"| {row['p99_deliver_ms']:.1f} ms | {_f(row.get('mean_batch'))} |"
        )
    return out


TABLES = {
    "density": density,
    "relay": relay,
    "latency": latency,
    "fanout": fanout,
    "logins": logins,
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else DEFAULT_OUT
    for scenario, table in TABLES.items():
        runs = []
        for path in sorted(root.glob(f"{scenario}-*.json")):
            data = json.loads(path.read_text())
            if not data.get("skipped"):
                git = data.get("git") or {}
                commit = (git.get("commit") or "")[:7] + ("+" if git.get("server_dirty") else "")
                runs.append((f"{path.stem.split('-', 1)[1]} `{commit}`", data))
        if runs:
            print(f"### {scenario}\n")
            print("\n".join(table(runs)) + "\n")


if __name__ == "__main__":
    main()
