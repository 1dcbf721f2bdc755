"""``GET /metrics``: counters the server already keeps, in the Prometheus text format.

Nothing on the hot path takes a lock or updates anything for this: each scrape reads plain
attributes (commit counters, open connections, online users, the send path's counters)
through one function that the composition root builds (``chatd/app.py``), and
``prometheus_client`` renders them as a custom collector (no registry of live metric objects,
so no lock per increment).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

#: The classic text format (what ``generate_latest`` writes), which every scraper reads.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Sample:
    """One series. Samples sharing a ``name`` (with different ``labels``) form one family."""

    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    value: float  # a histogram's sum
    labels: tuple[tuple[str, str], ...] = ()
    #: a histogram's (upper bound, cumulative count), ending with (inf, count)
    buckets: tuple[tuple[float, int], ...] = ()


Collector = Callable[[], list[Sample]]


class _Families:
    """A one-scrape prometheus_client collector over a list of samples."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for s in self.samples:
            family = families.get(s.name)
            names = [k for k, _ in s.labels]
            if family is None:
                kind = {"counter": CounterMetricFamily, "histogram": HistogramMetricFamily}
                family = kind.get(s.kind, GaugeMetricFamily)(s.name, s.help, labels=names)
                families[s.name] = family
            values = [v for _, v in s.labels]
            if isinstance(family, HistogramMetricFamily):
                buckets = [(_bound(b), float(c)) for b, c in s.buckets]
                family.add_metric(values, buckets, s.value)
            else:
                family.add_metric(values, s.value)  # type: ignore[union-attr]
        yield from families.values()


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def render(samples: list[Sample]) -> bytes:
    return generate_latest(_Families(samples))  # type: ignore[arg-type]
