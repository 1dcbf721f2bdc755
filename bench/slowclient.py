"""The slow-consumer scenario's load client: ``bench/loadclient.py`` plus latency per second.

The load client keeps raw send->deliver latencies of a measuring window; ``bench slow`` needs
them second by second over the whole run (the healthy devices' p99 before, during and after
one device stalls), for 99 devices at 1,000 msgs/s (~100k deliveries/s), so this client
files every delivery into a histogram of its receive second instead:

- ``mark``: second 0 starts now (CLOCK_MONOTONIC, shared by every process of the machine);
- ``series``: per second, ``[second, count, max_us, {bin: count}]`` with 100 us bins, which
  the bench merges across processes into exact-to-100-us percentiles; the histograms are
  then cleared.

Run as ``python -m bench.slowclient`` with the load client's arguments.
"""

from __future__ import annotations

from typing import Any

from bench import loadclient
from bench.loadclient import LoadClient, monotonic_ns

BIN_US = 100


class SlowClient(LoadClient):
    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.t0 = monotonic_ns()
        #: second -> [count, max_us, {bin: count}]
        self.seconds: dict[int, list[Any]] = {}

    def on_msg(self, frame: dict[str, Any]) -> None:
        self.delivered += 1
        body = frame.get("body", "")
        try:
            t = int(body[: body.index("|")])
        except ValueError:
            return
        now = monotonic_ns()
        us = (now - t) // 1000
        sec = (now - self.t0) // 1_000_000_000
        row = self.seconds.get(sec)
        if row is None:
            row = self.seconds[sec] = [0, 0, {}]
        row[0] += 1
        if us > row[1]:
            row[1] = us
        bins = row[2]
        b = us // BIN_US
        bins[b] = bins.get(b, 0) + 1

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["cmd"]
        if name == "mark":
            self.t0 = int(cmd.get("t0_ns") or monotonic_ns())
            self.seconds = {}
            return {"t0_ns": self.t0}
        if name == "series":
            rows = [[sec, *row] for sec, row in sorted(self.seconds.items())]
            self.seconds = {}
            return {"rows": rows, "delivered": self.delivered}
        return await super().handle(cmd)


def main(argv: list[str] | None = None) -> None:
    loadclient.LoadClient = SlowClient  # type: ignore[misc]
    loadclient.main(argv)


if __name__ == "__main__":
    main()
