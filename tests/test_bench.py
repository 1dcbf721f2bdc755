"""Smoke test of the bench harness: tiny density and relay runs, end to end, as subprocesses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


@pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="the cluster scenario needs redis-server"
)
def test_cluster_smoke(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        "cluster",
        "--pairs",
        "3",
        "--rate",
        "60",
        "--warmup",
        "0.3",
        "--duration",
        "1",
        "--relay-pairs",
        "3",
        "--windows",
        "2",
        "--relay-duration",
        "1",
        "--clients",
        "2",
    )
    assert result["accounts"]["ws_url_mismatches"] == 0
    assert set(result["kinds"]) == {"local", "cross_seq_sender", "cross_forwarded"}
    for kind in result["kinds"].values():
        assert kind["pairs"] == 3 and kind["connect"]["ok"] == 6
        assert kind["acked"] > 0 and kind["deliver_us"]["n"] > 0
        assert set(kind["server_cpu"]) == {"s1", "s2", "redis"}
    assert set(result["targets"]) == {"2_shards", "1_shard"}
    for target in result["targets"].values():
        (w,) = target["windows"]
        assert w["acked"] > 0 and w["delivered"] > 0
    goals = result["summary"]["goals"]
    assert set(goals) == {
        "cross_p99_deliver<=5ms",
        "cpu_per_cross_msg<=2x_local",
        "relay_2_shards>=1.7x_1",
    }


@pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="the scale scenario needs redis-server"
)
def test_scale_smoke(tmp_path: Path) -> None:
    """The 150k run's code path (launcher, accounts by home, one fleet per shard, steps,
    keep-alive window, probes to chosen connections) at 2 shards x 20 connections."""
    result = run_bench(
        tmp_path,
        "scale",
        "--shards",
        "2",
        "--per-shard",
        "20",
        "--devices",
        "5",
        "--steps",
        "2",
        "--hb-interval",
        "1",
        "--hb-secs",
        "1",
        "--probes",
        "10",
        "--probe-rate",
        "50",
        "--probe-wait",
        "1",
    )
    assert result["accounts"]["ws_url_mismatches"] == 0
    assert [s["conns"] for s in result["steps"]] == [20 + 2, 40 + 2]  # + one sender per shard
    total = result["summary"]["total"]
    assert total["connections"] == 42 and not total["lost"]
    assert set(result["summary"]["shards"]) == {"s1", "s2"}
    for row in result["summary"]["shards"].values():
        assert row["connections"] == 21 and row["rss_mib"] > 0
    assert result["heartbeat"]["pings"] > 0 and result["heartbeat"]["redis_cpu_pct"] >= 0
    assert result["heartbeat_compare"]["kind"] == "app"
    assert result["heartbeat_compare"]["pongs"] > 0  # {"type":"pong"} frames came back
    probe = result["probe"]
    assert probe["probes"] == 10 and probe["delivered_to_chosen"] == 10 and probe["missing"] == 0
    assert probe["acked"] == 10 and not probe["errors"]
    assert set(result["summary"]["goals"]) == {
        "connections>=150000",
        "servers+redis_rss<=1.5GiB",
        "probes>=2000_each_within_1s",
    }


@pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="the scaling scenario needs redis-server"
)
def test_scaling_smoke(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        "scaling",
        "--shard-counts",
        "1,2",
        "--relay-pairs",
        "4",
        "--relay-duration",
        "1",
        "--warmup",
        "0.3",
        "--duration",
        "1",
        "--rate",
        "40",
        "--idle-secs",
        "0.5",
        "--clients",
        "2",
    )
    rows = result["summary"]["by_shards"]
    assert set(rows) == {"1_shards", "2_shards"}
    assert rows["1_shards"]["cross_shard_share"] == 0 and rows["1_shards"]["relay_ratio_to_1"] == 1
    for row in rows.values():
        assert row["relay_acked_per_s"] > 0 and row["latency_deliver_ms"]["p50"] > 0
    # Two shards talk through Redis: every cross-shard message is at least one XADD.
    assert rows["2_shards"]["redis_calls_per_msg"].get("xadd", 0) > 0


def test_soak_smoke(tmp_path: Path) -> None:
    """A few seconds of soak: pairs, a group, idle connections churned every 2 s; every
    sample has the server's memory, the pages per message and the commit batch."""
    result = run_bench(
        tmp_path,
        "soak",
        *("--connections", "60", "--pairs", "5", "--groups", "1", "--members", "4"),
        *("--idle-users", "3", "--rate", "50", "--duration", "6", "--sample-secs", "1"),
        *("--churn-every", "2", "--churn-pct", "300", "--clients", "1", "--memdebug"),
    )
    soak = result["targets"]["chatd"]
    last = soak["samples"][-1]
    assert last["final"] and last["open"] == 60 and last["lost"] == 0
    assert last["churned"] >= 6 and last["reopened"] == last["churned"]
    assert last["acked_total"] > 100 and last["delivered_total"] > last["acked_total"]
    assert all(s["rss_anon_kib"] > 0 and s["used_bytes_per_msg"] > 0 for s in soak["samples"])
    assert any(s.get("mean_batch_msgs") for s in soak["samples"])
    assert soak["memdebug"]["last"]["tables"]["sessions_devices"] == 60
    assert "rss_anon_flat_within_5mib_after_warmup" in result["summary"]["goals"]
