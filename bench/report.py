"""Results: machine and git facts, exact percentiles, the JSON file and its PNG plot.

Each scenario writes ``<out>/<scenario>-<timestamp>.json`` and a PNG with the same stem.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results"
PACKAGES = ("trio", "wsproto", "h11", "msgpack", "lmdb", "websockets", "uvloop", "trio-websocket")


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        pass
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "mem_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "packages": versions,
    }


def git() -> dict[str, Any]:
    def run(*argv: str) -> str:
        try:
            out = subprocess.run(
                ["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()

    return {
        "commit": run("rev-parse", "HEAD"),
        "branch": run("rev-parse", "--abbrev-ref", "HEAD"),
        "server_dirty": bool(run("status", "--porcelain", "--", "chatd", "storage")),
    }


def percentiles(
    samples: Sequence[float], ps: Sequence[float] = (50, 90, 99, 99.9)
) -> dict[str, Any]:
    """Exact (nearest-rank) percentiles plus max and count; values as given (e.g. us)."""
    if not samples:
        return {"n": 0}
    data = sorted(samples)
    out: dict[str, Any] = {"n": len(data)}
    for p in ps:
        rank = max(1, min(len(data), -(-len(data) * p // 100)))
        out[f"p{p:g}"] = data[int(rank) - 1]
    out["max"] = data[-1]
    out["mean"] = sum(data) / len(data)
    return out


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope)."""
    n = len(xs)
    if n < 2:
        return (ys[0] if ys else 0.0), 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def write(
    out_dir: Path,
    scenario: str,
    result: dict[str, Any],
    plot: Callable[[dict[str, Any], Path], None] | None,
    when: str | None = None,
) -> tuple[Path, Path | None]:
    """Write the JSON (and the plot, if any); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{scenario}-{when or stamp()}"
    json_path = out_dir / f"{stem}.json"
    png_path = out_dir / f"{stem}.png" if plot is not None else None
    if png_path is not None:
        result["plot"] = png_path.name
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if plot is not None and png_path is not None:
        import matplotlib

        matplotlib.use("Agg")
        plot(result, png_path)
    return json_path, png_path


def envelope(scenario: str, args: dict[str, Any], config_text: str | None) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "git": git(),
        "args": args,
        "chatd_config": config_text,
    }
