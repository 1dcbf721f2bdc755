"""``cluster`` (relay across shards): chatd has no shards yet; this checks for them
(``chatd serve --discovery``) and reports a clear skip until they land."""

from __future__ import annotations

import argparse
import subprocess
from typing import Any

from bench.procs import python
from bench.run import Run


def cluster(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [python(), "-m", "chatd", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    if "--discovery" not in out.stdout:
        return {"skipped": "needs shards: `chatd serve` has no --discovery option yet"}
    return {"skipped": "shards exist but the cluster load is not written yet"}
