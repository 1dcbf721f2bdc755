"""Closing WebSockets on drain, spread over time so clients do not reconnect in one storm.

Closing every WebSocket in the same instant makes every client reconnect (to the next
server, or to this one once restarted) in the same instant too: a thundering herd of
handshakes, logins and ``since`` replays. So the drain closes them with 1001 in slices,
evenly over the first ``SPREAD`` of ``server.drain_timeout`` (5 s of the default 10 s),
leaving the rest of the window for the last closes to flush and for in-flight commits:

- up to ``MIN_SLICE`` connections are closed at once (too few to storm anything);
- otherwise ``ceil(n / MIN_SLICE)`` slices, at most ``MAX_SLICES_PER_SECOND`` per second of
  the spread window, in a random order (so no group of clients is always last).

Clients add their own jittered backoff on top (the contract asks them to).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Protocol

import trio

SPREAD = 0.5  # part of the drain timeout over which closes are spread
MIN_SLICE = 50  # connections closed together, at least
MAX_SLICES_PER_SECOND = 20


class Closable(Protocol):
    def close(self, code: int, reason: str = "") -> None: ...


def plan(n: int, window: float) -> tuple[int, float]:
    """(slices, seconds between slices) for closing ``n`` connections over ``window``."""
    if n <= MIN_SLICE or window <= 0:
        return 1, 0.0
    slices = min(math.ceil(n / MIN_SLICE), max(1, math.ceil(window * MAX_SLICES_PER_SECOND)))
    return slices, window / slices


async def close_spread(
    conns: Iterable[Closable], window: float, code: int = 1001, reason: str = "server draining"
) -> int:
    """Close ``conns`` (a snapshot is taken) with ``code`` in slices over ``window`` seconds;
    returns how many were asked to close. A connection that ended meanwhile is closed again
    harmlessly (``close`` is idempotent)."""
    pending = list(conns)
    random.shuffle(pending)
    slices, gap = plan(len(pending), window)
    size = math.ceil(len(pending) / slices) if pending else 0
    for i in range(slices):
        if i:
            await trio.sleep(gap)
        for conn in pending[i * size : (i + 1) * size]:
            conn.close(code, reason)
    return len(pending)
