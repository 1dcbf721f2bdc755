"""What the relay and latency scenarios share: pair users, one timed traffic window, merging
the clients' replies into rates and exact percentiles."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.fleet import Fleet
from bench.procs import CpuMeter
from bench.profile import Recorder
from bench.report import percentiles
from bench.run import Run
from bench.targets import Target, commit_figures

CDF_POINTS = 400


def pair_names(pairs: int) -> tuple[list[str], list[str]]:
    return [f"snd{i:05d}" for i in range(pairs)], [f"rcv{i:05d}" for i in range(pairs)]


def connect_pairs(
    run: Run, target: Target, fleet: Fleet, tokens: dict[str, str], pairs: int
) -> dict[str, Any]:
    """One sender and one receiver connection per pair, both in the same client process."""
    senders, receivers = pair_names(pairs)
    sessions: list[tuple[str, str | None]] = []
    for s, r in zip(senders, receivers, strict=True):
        sessions += [(tokens[s], r), (tokens[r], None)]
    result = fleet.connect(sessions, keep_together=2)
    run.log(
        f"{target.kind}: {result['ok']}/{len(sessions)} pair connections in {result['secs']:.1f} s"
    )
    if result["failed"]:
        run.log(f"{target.kind}: connect failures {result['failed']}")
    return result


def window(
    run: Run,
    target: Target,
    fleet: Fleet,
    cmds: list[dict[str, Any]],
    warmup: float,
    duration: float,
    drain: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Start a traffic command on every client; measure CPU over the measuring window (and
    sample the server with py-spy when ``profile`` names a file)."""
    fleet.tell(cmds)
    time.sleep(warmup)
    metrics0 = target.metrics()
    recorder = Recorder(target.pid, duration, profile) if profile and target.pid else None
    server = CpuMeter([target.pid]).start() if target.pid else None
    clients = CpuMeter(fleet.pids).start()
    time.sleep(duration)
    client_cpu = clients.stop()
    server_cpu = server.stop() if server is not None else None
    metrics1 = target.metrics()
    replies = fleet.collect(warmup + duration + drain + 60)
    merged = merge(replies, duration)
    merged["client_cpu_pct"] = client_cpu["cpu_pct"]
    expected = sum(fleet.sessions)
    if merged["open"] < expected:
        run.log(f"{target.kind}: WARNING {expected - merged['open']} connections lost")
    if recorder is not None:
        merged["profile"] = recorder.finish()
    if server_cpu is not None:
        merged["server_cpu_pct"] = server_cpu["cpu_pct"]
        merged["server_sys_pct"] = server_cpu["sys_pct"]
        if merged["acked"]:
            merged["server_us_per_msg"] = server_cpu["cpu_s"] / merged["acked"] * 1e6
    # Counted over the CPU window, not the clients' window: a close estimate.
    merged.update(commit_figures(metrics0, metrics1, merged["acked"], duration))
    return merged


def merge(replies: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    totals = {
        k: sum(r["window"][k] for r in replies) for k in ("sent", "acked", "delivered", "errors")
    }
    ack = [t for r in replies for t in r["ack_us"]]
    deliver = [t for r in replies for t in r["deliver_us"]]
    codes: dict[str, int] = {}
    for r in replies:
        for code, n in r["error_codes"].items():
            codes[code] = codes.get(code, 0) + n
    return {
        **totals,
        "acked_per_s": totals["acked"] / duration,
        "delivered_per_s": totals["delivered"] / duration,
        "sent_per_s": totals["sent"] / duration,
        "error_codes": codes,
        "unfinished": sum(r["unfinished"] for r in replies),
        "skipped": sum(r.get("skipped", 0) for r in replies),
        "open": sum(r["open"] for r in replies),
        "ack_us": percentiles(ack),
        "deliver_us": percentiles(deliver),
        "deliver_cdf": cdf(deliver),
        "ack_cdf": cdf(ack),
    }


def cdf(samples: list[int], points: int = CDF_POINTS) -> list[tuple[int, float]]:
    """(value, fraction <= value) at evenly spaced ranks, always including the max."""
    if not samples:
        return []
    data = sorted(samples)
    n = len(data)
    idx = sorted({min(n - 1, int(i * n / points)) for i in range(points)} | {n - 1})
    return [(data[i], (i + 1) / n) for i in idx]


def share(total: float, weights: list[int]) -> list[float]:
    """Split ``total`` in proportion to ``weights``."""
    s = sum(weights)
    return [total * w / s if s else 0.0 for w in weights]
