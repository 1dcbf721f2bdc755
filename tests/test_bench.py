"""Smoke test of the bench harness: tiny density and relay runs, end to end, as subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--out", str(tmp_path), "--settle", "0.2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (path,) = tmp_path.glob(f"{args[0]}-*.json")
    result: dict[str, Any] = json.loads(path.read_text())
    assert (tmp_path / result["plot"]).stat().st_size > 0
    for key in ("scenario", "machine", "git", "args", "targets", "summary"):
        assert key in result
    return result


def test_density_smoke(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        "density",
        "--steps",
        "50",
        "--targets",
        "chatd",
        "--users",
        "5",
        "--clients",
        "2",
        "--idle-secs",
        "0.5",
        "--hb-interval",
        "1",
        "--hb-secs",
        "1",
    )
    (step,) = result["targets"]["chatd"]["steps"]
    assert step["held"] == 50 and step["held_after"] == 50
    assert step["rss_kib"] > 0 and step["kib_per_conn"] > 0
    assert step["heartbeat"]["pings"] > 0
    row = result["summary"]["by_target"]["chatd"]
    assert row["connections"] == 50 and row["hellos_per_s"] > 0
    assert set(row["projected_gib"]) == {"200000", "1000000"}


def test_relay_smoke(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        "relay",
        "--pairs",
        "4",
        "--windows",
        "2",
        "--warmup",
        "0.5",
        "--duration",
        "2",
    )
    summary = result["summary"]
    assert set(summary["by_target"]) == {"chatd", "trio", "websockets"}
    for row in summary["by_target"].values():
        assert row["saturated_acked_per_s"] > 0 and row["delivered_per_s"] > 0
    (w,) = result["targets"]["chatd"]["windows"]
    assert w["errors"] == 0 and w["acked"] > 0 and w["deliver_us"]["n"] > 0
    # Group-commit figures come from chatd's /metrics (the bench opens no LMDB file).
    assert w["commit_metrics"]["chatd_commit_batches_total"] > 0
    assert w["lmdb_commits_per_s"] > 0 and w["mean_batch"] >= 1
    assert set(summary["ratios"]) == {"chatd/trio", "chatd/websockets"}
