"""``chatd-bench SCENARIO [options]`` / ``python -m bench SCENARIO [options]``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    cluster,
    density,
    fanout,
    latency,
    logins,
    plots,
    relay,
    report,
    scale,
    scaling,
    slow,
    soak,
    storage,
    storm,
    torture,
)
from bench.run import Run, describe_args
from bench.targets import KINDS

Scenario = Callable[[Run, argparse.Namespace], dict[str, Any]]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _targets(text: str) -> list[str]:
    kinds = [x.strip() for x in text.split(",") if x.strip()]
    for kind in kinds:
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(
                f"unknown target {kind!r} (choose from {', '.join(KINDS)})"
            )
    return kinds


def _common(
    p: argparse.ArgumentParser, *, targets: str = "chatd,trio,websockets", clients: int = 2
) -> None:
    p.add_argument(
        "--targets",
        type=_targets,
        default=_targets(targets),
        help=f"servers to run against ({targets})",
    )
    p.add_argument(
        "--pin", action="store_true", help="pin the server to core 0, clients and bench to core 1"
    )
    p.add_argument(
        "--clients", type=int, default=clients, help=f"load-client processes ({clients})"
    )
    p.add_argument(
        "--out", type=Path, default=report.DEFAULT_OUT, help="results directory (bench/results)"
    )
    p.add_argument("--target", metavar="URL", help="use a running chatd instead of starting one")
    p.add_argument("--server-pid", type=int, help="with --target: the server's PID, to measure it")
    p.add_argument(
        "--chatd-config", metavar="FILE", help="chatd TOML config instead of the bench's"
    )
    p.add_argument("--settle", type=float, default=2.0, help="seconds to let the server settle (2)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, data)")
    p.add_argument(
        "--hb-interval",
        type=float,
        default=20.0,
        help="every connection sends a heartbeat this often, seconds; 0: never (20; chatd "
        "closes a device silent for presence.timeout, 30 s)",
    )
    p.add_argument(
        "--hb-kind", choices=["ws", "app"], default="ws", help="WebSocket ping or {type: ping} (ws)"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample each server with py-spy in every measuring window (raw stacks kept)",
    )


def _traffic(p: argparse.ArgumentParser, *, pairs: int, warmup: float, duration: float) -> None:
    p.add_argument("--pairs", type=int, default=pairs, help=f"online 1:1 pairs ({pairs})")
    p.add_argument(
        "--warmup", type=float, default=warmup, help=f"seconds before measuring ({warmup:g})"
    )
    p.add_argument(
        "--duration", type=float, default=duration, help=f"measuring seconds ({duration:g})"
    )
    p.add_argument("--body", type=int, default=32, help="message body characters (32)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="chatd-bench", description="chatd load tests; see bench/README.md"
    )
    sub = top.add_subparsers(dest="scenario", required=True)

    p = sub.add_parser(
        "density", help="idle authenticated connections: RSS/conn, idle and heartbeat CPU"
    )
    _common(p, clients=4)
    p.add_argument(
        "--steps",
        type=_ints,
        default=[1000, 5000, 10000, 15000],
        help="connection counts (1000,5000,10000,15000)",
    )
    p.add_argument("--users", type=int, default=100, help="accounts holding the connections (100)")
    p.add_argument(
        "--concurrency", type=int, default=256, help="handshakes in flight per client (256)"
    )
    p.add_argument("--idle-secs", type=float, default=10.0, help="idle CPU window per step (10)")
    p.add_argument("--hb-secs", type=float, default=30.0, help="last step's long CPU window (30)")
    p.set_defaults(func=density.run, plot=plots.density)

    p = sub.add_parser("relay", help="saturated 1:1 relay with a send window, vs the baselines")
    _common(p)
    _traffic(p, pairs=1000, warmup=3.0, duration=10.0)
    p.add_argument(
        "--windows", type=_ints, default=[1, 4, 16], help="un-acked sends per sender (1,4,16)"
    )
    p.set_defaults(func=relay.run, plot=plots.relay)

    p = sub.add_parser("latency", help="send->ack and send->deliver at a fixed rate")
    _common(p, clients=4)
    _traffic(p, pairs=1000, warmup=3.0, duration=20.0)
    p.add_argument(
        "--rates",
        "--rate",
        type=_floats,
        default=[5000.0],
        help="total msgs/s, comma-separated (5000)",
    )
    p.add_argument("--idle", type=int, default=0, help="idle connections attached (0)")
    p.add_argument(
        "--idle-users", type=int, default=100, help="accounts holding the idle connections (100)"
    )
    p.set_defaults(func=latency.run, plot=plots.latency)

    p = sub.add_parser(
        "logins", help="password logins/s, token reconnects/s, chat p99 during a login burst"
    )
    _common(p, targets="chatd")
    p.add_argument("--users", type=int, default=200, help="accounts (200)")
    p.add_argument("--workers", type=int, default=16, help="concurrent HTTP logins (16)")
    p.add_argument("--reconnects", type=int, default=5000, help="token hellos per round (5000)")
    p.add_argument("--rounds", type=int, default=2, help="reconnect rounds (2)")
    p.add_argument(
        "--concurrency", type=int, default=256, help="handshakes in flight per client (256)"
    )
    _traffic(p, pairs=100, warmup=2.0, duration=10.0)
    p.add_argument("--rate", type=float, default=1000.0, help="chat msgs/s during the burst (1000)")
    p.set_defaults(func=logins.run, plot=plots.logins)

    p = sub.add_parser("fanout", help="100-member groups: group msgs/s and deliveries/s")
    _common(p, targets="chatd")
    _traffic(p, pairs=0, warmup=3.0, duration=10.0)
    p.add_argument("--groups", type=int, default=10, help="groups (10)")
    p.add_argument(
        "--members", type=int, default=100, help="members per group, owner included (100)"
    )
    p.add_argument("--senders", type=int, default=1, help="sending members per group (1)")
    p.add_argument(
        "--windows", type=_ints, default=[1, 4, 16], help="un-acked sends per sender (1,4,16)"
    )
    p.set_defaults(func=fanout.run, plot=plots.fanout)

    p = sub.add_parser(
        "cluster",
        help="shards on Redis: cross-shard latency and CPU per message, relay 1 vs N shards",
    )
    _common(p, targets="chatd", clients=4)
    p.add_argument("--shards", type=int, default=2, help="shards of the measured cluster (2)")
    p.add_argument("--pairs", type=int, default=250, help="1:1 pairs per latency kind (250)")
    p.add_argument("--rate", type=float, default=2000.0, help="total msgs/s per kind (2000)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (3)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per latency kind (20)")
    p.add_argument("--body", type=int, default=32, help="message body characters (32)")
    p.add_argument(
        "--kinds",
        type=lambda t: [k for k in t.split(",") if k],
        default=list(cluster.KINDS),
        help="latency kinds (" + ",".join(cluster.KINDS) + ")",
    )
    p.add_argument(
        "--relay-pairs", type=int, default=500, help="relay pairs, homed at random (500)"
    )
    p.add_argument(
        "--windows", type=_ints, default=[4, 16], help="relay: un-acked sends per sender (4,16)"
    )
    p.add_argument(
        "--relay-duration", type=float, default=10.0, help="relay measuring seconds (10)"
    )
    p.add_argument("--seed", type=int, default=11, help="relay pairing seed (11)")
    p.set_defaults(func=cluster.run, plot=cluster.plot, out=report.DEFAULT_OUT / "cluster")

    p = sub.add_parser(
        "scale",
        help="Redis + N shards, many live heartbeating connections: RSS, CPU, reachability",
    )
    _common(p, targets="chatd", clients=1)
    p.set_defaults(hb_interval=10.0)
    p.add_argument("--shards", type=int, default=10, help="shards (10)")
    p.add_argument("--per-shard", type=int, default=15000, help="connections per shard (15000)")
    p.add_argument("--devices", type=int, default=50, help="sessions per user (50)")
    p.add_argument("--steps", type=int, default=5, help="equal connection steps (5)")
    p.add_argument(
        "--clients-per-shard", type=int, default=1, help="load-client processes per shard (1)"
    )
    p.add_argument(
        "--concurrency", type=int, default=128, help="handshakes in flight per client (128)"
    )
    p.add_argument("--workers", type=int, default=8, help="concurrent HTTP signups (8)")
    p.add_argument("--hb-secs", type=float, default=30.0, help="keep-alive CPU window (30)")
    p.add_argument(
        "--hb-compare",
        choices=["", "ws", "app"],
        default="app",
        help="then a second keep-alive window with this heartbeat kind; '' to skip (app)",
    )
    p.add_argument("--probes", type=int, default=2000, help="random connections messaged (2000)")
    p.add_argument("--probe-rate", type=float, default=200.0, help="probe msgs/s in all (200)")
    p.add_argument(
        "--probe-wait", type=float, default=3.0, help="seconds to wait after the last probe (3)"
    )
    p.add_argument("--seed", type=int, default=12, help="probe choice seed (12)")
    p.add_argument(
        "--max-secs", type=float, default=1500.0, help="load clients' hard lifetime (1500)"
    )
    p.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        default=0,
        help="set MALLOC_MMAP_THRESHOLD_ (bytes) for the shards; 0: glibc's default (0)",
    )
    p.set_defaults(func=scale.run, plot=scale.plot, out=report.DEFAULT_OUT / "scale")

    p = sub.add_parser(
        "scaling", help="relay and latency on 1, 2, 4, 10 shards of one box: cost of sharding"
    )
    _common(p, targets="chatd", clients=4)
    p.add_argument(
        "--shard-counts", type=_ints, default=[1, 2, 4, 10], help="cluster sizes (1,2,4,10)"
    )
    p.add_argument("--relay-pairs", type=int, default=200, help="1:1 pairs homed at random (200)")
    p.add_argument("--windows", type=_ints, default=[4], help="relay: un-acked sends (4)")
    p.add_argument("--relay-duration", type=float, default=10.0, help="relay seconds (10)")
    p.add_argument("--rate", type=float, default=500.0, help="latency window msgs/s (500)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (3)")
    p.add_argument("--duration", type=float, default=10.0, help="latency seconds (10)")
    p.add_argument("--body", type=int, default=32, help="message body characters (32)")
    p.add_argument("--seed", type=int, default=12, help="pairing seed (12)")
    p.add_argument(
        "--idle-secs", type=float, default=3.0, help="silent CPU window before latency (3)"
    )
    p.set_defaults(func=scaling.run, plot=scaling.plot, out=report.DEFAULT_OUT / "scale")

    p = sub.add_parser(
        "slow", help="1 device stops reading in a busy group: healthy p99, its close, replay"
    )
    _common(p, targets="chatd", clients=2)
    slow.add_arguments(p)
    p.set_defaults(func=slow.run, plot=slow.plot)

    torture.add_parser(sub)
    storm.add_parser(sub)
    storage.add_parser(sub)
    soak.add_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.scenario == "storm":  # restarts its own server, SIGTERM and SIGKILL: no Run
        return storm.main(args)
    if args.scenario == "torture":  # runs its own server, killed and restarted: no Run
        return torture.main(args)
    if args.scenario == "storage":  # no server: the on-disk format under the real write path
        return storage.main(args)
    if args.target:
        args.targets = [k for k in args.targets if k == "chatd"] or ["chatd"]
    with Run(args) as run:
        result = report.envelope(
            args.scenario, describe_args(args), run.config_text if not args.target else None
        )
        result.update(args.func(run, args))
    if result.get("skipped"):
        print(f"chatd-bench {args.scenario}: skipped: {result['skipped']}", file=sys.stderr)
    json_path, png_path = report.write(args.out, args.scenario, result, args.plot, run.stamp)
    print(json.dumps(result.get("summary", {}), indent=2))
    print(f"wrote {json_path}" + (f" and {png_path}" if png_path else ""))
    return 0
