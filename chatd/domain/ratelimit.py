"""Token buckets keyed by user or IP, on trio's clock."""

from __future__ import annotations

import trio

#: Seconds (trio time) between sweeps that forget refilled buckets.
PRUNE_INTERVAL = 60.0


class RateLimiter:
    """``rate`` tokens per second up to ``burst``; :meth:`take` spends one.

    A bucket that has refilled is the same as no bucket, so it is forgotten: by a sweep at most
    every :data:`PRUNE_INTERVAL` seconds (run by a ``take``), and at once when the table passes
    ``max_keys``. Memory follows the keys active in the last minute or so, not every user or
    address ever seen (issue 19: a long-running shard meets new users all the time).
    """

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._prune_at = 0.0

    def take(self, key: str) -> float:
        """Spend a token: 0.0 if allowed, else the seconds until one is available."""
        now = trio.current_time()
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens - 1.0, now)
        if now >= self._prune_at or len(self._buckets) > self.max_keys:
            self._prune(now)
        return 0.0

    def __len__(self) -> int:
        """Buckets held (keys seen lately whose bucket has not been forgotten)."""
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        self._prune_at = now + PRUNE_INTERVAL
        full = [k for k, (t, s) in self._buckets.items() if t + (now - s) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
