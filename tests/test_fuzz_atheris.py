"""The atheris harnesses (fuzz/, docs/fuzzing.md) in the suite: each runs briefly under
libFuzzer in a subprocess of its own and must end with 0 crashes, and each harness's seed
corpus (every crash ever found included) replays clean without instrumentation.

The long runs (``python -m fuzz NAME --runs 1000000``) are on demand; these keep the harnesses
working and the fixed bugs fixed. libFuzzer's seed is fixed so a run is repeatable.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import HARNESSES, corpus_files

ROOT = Path(__file__).resolve().parent.parent
#: runs per harness: a few seconds each (the pure ones are ~100x faster per input)
RUNS = {"frames": 20_000, "session": 4_000, "http_request": 1_000, "ws_bytes": 1_000}
DEADLINE = 120  # seconds for one subprocess (a wedge, not a speed check)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None, reason="atheris is not installed (test extra)"
)


def fuzz(*args: str, work: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHATD_FUZZ_WORK": str(work)}
    return subprocess.run(
        [sys.executable, "-m", "fuzz", *args, "--work", str(work)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


def test_every_harness_has_a_run_budget_and_a_corpus() -> None:
    assert set(RUNS) == set(HARNESSES)
    for name in HARNESSES:
        assert corpus_files(name), f"fuzz/corpus/{name} is empty"


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_harness_runs_without_crashes(name: str, tmp_path: Path) -> None:
    runs = RUNS[name]
    done = fuzz(name, "--runs", str(runs), "--seed", "1", work=tmp_path)
    tail = done.stderr[-3000:]
    assert done.returncode == 0, tail
    executed = re.search(r"stat::number_of_executed_units: (\d+)", done.stderr)
    assert executed and int(executed.group(1)) >= runs, tail
    assert not list((tmp_path / name).glob("crash-*")), tail
    assert not list((tmp_path / name).glob("timeout-*")), tail


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_corpus_replays_clean(name: str, tmp_path: Path) -> None:
    done = fuzz(name, "--replay", work=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"replayed {len(corpus_files(name))} inputs" in done.stdout, done.stdout
