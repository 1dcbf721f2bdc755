"""``GET /metrics``: counters the server already keeps, in the Prometheus text format.

Nothing on the hot path takes a lock or updates anything for this: each scrape reads plain
attributes (commit counters, open connections, online users) through one function that the
composition root builds (``chatd/app.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # "counter" or "gauge"
    help: str
    value: float


Collector = Callable[[], list[Sample]]


def render(samples: list[Sample]) -> bytes:
    lines = []
    for s in samples:
        lines.append(f"# HELP {s.name} {s.help}")
        lines.append(f"# TYPE {s.name} {s.kind}")
        value = int(s.value) if float(s.value).is_integer() else s.value
        lines.append(f"{s.name} {value}")
    return ("\n".join(lines) + "\n").encode()
