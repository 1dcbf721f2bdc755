"""``--profile``: sample the chatd server with py-spy during a measuring window.

py-spy (``pip install py-spy``) records collapsed stacks (``--format raw``) of every thread;
:func:`summarize` turns them into the share of samples per function (self and inclusive) and
per thread kind (event loop vs worker threads), which goes into the result JSON, while the
raw file and a flame graph SVG are kept next to the results.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE = 100  # samples per second: low enough not to disturb the server much


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Recorder:
    """``py-spy record`` on ``pid`` for ``secs`` seconds, raw stacks to ``out``."""

    def __init__(self, pid: int, secs: float, out: Path) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.out = out
        argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(secs)))]
        argv += ["--rate", str(RATE), "--nonblocking", "--format", "raw", "-o", str(out)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self, timeout: float = 30.0) -> dict[str, Any] | None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if not self.out.exists():
            return None
        summary = summarize(self.out.read_text())
        summary["raw"] = self.out.name
        return summary


def summarize(raw: str, top: int = 20) -> dict[str, Any]:
    """Shares (percent of samples) per function, self and inclusive, and per thread kind."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        kinds["worker threads" if "Thread._bootstrap" in frames[0] else "event loop"] += n
        self_time[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, round(100.0 * c / total, 1)) for name, c in counter.most_common(n)]

    return {
        "samples": total,
        "threads_pct": dict(share(kinds, 5)),
        "self_pct": share(self_time, top),
        "inclusive_pct": share(inclusive, top + 20),
    }
