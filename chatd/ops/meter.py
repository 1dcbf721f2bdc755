"""Counters of the send path for ``/metrics``: messages accepted and delivered, ack latency.

:class:`MeteredMessenger` is the domain's :class:`~chatd.domain.messaging.Messenger` plus a
few integer increments on the event loop, in the commit hooks that already run there: no
lock, no allocation per message, nothing when nobody scrapes. The ack latency is measured
from a message's ``ts`` (the server's time of acceptance, set just before its commit is
queued) to its ack, so it covers the group commit and its fsync; ``ts`` has millisecond
resolution, so the figure may read up to 1 ms high.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from chatd.domain.accounts import now_ms
from chatd.domain.messaging import Messenger
from chatd.domain.messaging_tx import Appended
from chatd.domain.ports import DeviceSink
from storage import Message

#: Upper bounds of the ack latency histogram, in milliseconds (the last bucket is +Inf).
ACK_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Histogram:
    """Fixed buckets, updated on the event loop only (so a plain list is enough)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self, scale: float = 1.0) -> list[tuple[float, int]]:
        """(upper bound * ``scale``, observations <= it), ending with (inf, count)."""
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound * scale, running))
        return out


class MeteredMessenger(Messenger):
    """A Messenger that counts what it commits and delivers (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accepted = 0  # messages committed here (sequenced on this shard), not resends
        self.delivered = 0  # msg frames handed to online devices
        self.ack_latency_ms = Histogram(ACK_BUCKETS_MS)

    def _committed(
        self, device: DeviceSink, ref: str, appended: Appended | None, error: BaseException | None
    ) -> None:
        super()._committed(device, ref, appended, error)
        if appended is not None and not appended.duplicate:
            self.ack_latency_ms.observe(max(0, now_ms() - appended.message.ts))

    def _stored(self, appended: Appended, exclude: DeviceSink | None = None) -> None:
        # every commit of a send, local or forwarded by another shard, comes here once
        super()._stored(appended, exclude)
        if not appended.duplicate:
            self.accepted += 1

    def fan_out(
        self, inbox: dict[str, int], message: Message, exclude: DeviceSink | None = None
    ) -> None:
        super().fan_out(inbox, message, exclude)
        devices = self.sessions.devices
        n = 0
        for user in inbox:
            n += len(devices(user))
        if exclude is not None and exclude.user_id in inbox and exclude in devices(exclude.user_id):
            n -= 1
        self.delivered += n
