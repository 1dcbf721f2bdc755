"""Deadlines that a stalled event loop cannot trip.

A shard's link to Redis gives each call a few seconds. On a saturated machine the loop itself
can fall seconds behind (CPU starved by other processes, a long burst of deliveries), and a
plain ``trio.fail_after`` then expires although Redis answered at once: the reply sat in the
socket while the loop was busy. Cancelling a coredis request drops its connection, so every
such false alarm used to become a Redis "outage", a reconnect, and records waiting for their
resend: the stall fed itself.

:class:`SteadyClock` counts the loop's own progress instead: trio's clock, except that a gap
between two of its ticks counts for at most ``cap`` seconds. When the loop runs freely it is
trio's clock (to within a tick); a 10 s stall counts as ``cap``. Deadlines set on it
(:meth:`SteadyClock.fail_after`) expire after that many seconds *of a responsive loop*, so a
Redis that really stopped answering is still found out, and a slow loop is not taken for one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


class SteadyClock:
    """Loop-progress time and deadlines on it; :meth:`run` must be running for deadlines to
    expire (the broker runs it for as long as its link lives)."""

    def __init__(self, tick: float = 0.25, cap: float = 0.5) -> None:
        self.tick = tick
        self.cap = cap
        self._base = 0.0
        self._last: float | None = None
        self._deadlines: dict[trio.CancelScope, float] = {}
        #: The longest single stall seen (real seconds between two ticks beyond ``tick``).
        self.worst_stall = 0.0

    def now(self) -> float:
        """Seconds of loop progress since this clock first looked (monotonic)."""
        real = trio.current_time()
        if self._last is None:
            self._last = real
        return self._base + min(real - self._last, self.cap)

    async def run(self) -> None:
        """Tick forever: advance the clock and expire the deadlines that are due."""
        while True:
            await trio.sleep(self.tick)
            self._advance()

    def _advance(self) -> None:
        real = trio.current_time()
        if self._last is None:
            self._last = real
        gap = real - self._last
        self.worst_stall = max(self.worst_stall, gap - self.tick)
        self._base += min(gap, self.cap)
        self._last = real
        for scope, deadline in list(self._deadlines.items()):
            if deadline <= self._base:
                scope.cancel()

    @contextmanager
    def fail_after(self, seconds: float) -> Iterator[trio.CancelScope]:
        """Like :func:`trio.fail_after`, in loop-progress seconds: raises
        :class:`trio.TooSlowError` if the block is still running once the loop has made
        ``seconds`` of progress (to within a tick)."""
        with trio.CancelScope() as scope:
            self._deadlines[scope] = self.now() + seconds
            try:
                yield scope
            finally:
                del self._deadlines[scope]
        if scope.cancelled_caught:
            raise trio.TooSlowError
