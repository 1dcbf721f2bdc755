"""Storage economy (issue 19): LMDB pages per stored 100-character DM, by sub-database.

``python -m bench storage --messages 200000 --pairs 1000``: N direct messages with B-character
bodies go through the real write path (``append_message`` in group-commit batches of the
store's committer, ``--window`` sends in flight, pairs taken round-robin, refs shaped like the
load clients'), into a fresh data directory; then every sub-database's pages are counted as
``mdb_stat`` does (``env.stat`` of each: branch + leaf + overflow pages x page size) and
divided by the messages stored. No server, no sockets: this measures the on-disk format and
the B-tree's fill under the real insert order, not the network. It also reports the send
rate the committer reached (``msgs_per_s``, a rough figure on a shared machine) and the CPU
this process spent per message (``cpu_us_per_msg``: the domain's transaction function, the
encodings and LMDB's puts, all threads), the write path's cost without the network.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench import report
from chatd.domain.channels import dm_channel
from chatd.domain.messaging_tx import append_message
from storage import Store
from storage.offline import pages as page_stats


async def fill(
    path: str, *, messages: int, pairs: int, body: int, window: int
) -> tuple[float, float]:
    """Store ``messages`` DMs through the committer; (the seconds it took, the CPU seconds
    this process used meanwhile: the loop, the committer's threads, the fsyncs' system time)."""
    store = Store(path)
    text = "x" * body
    prefix = f"{os.getpid():x}."
    senders = [f"snd{i:05d}" for i in range(pairs)]
    receivers = [f"rcv{i:05d}" for i in range(pairs)]
    next_i = 0

    async def sender() -> None:
        nonlocal next_i
        while next_i < messages:
            i = next_i
            next_i += 1
            a, b = senders[i % pairs], receivers[i % pairs]
            channel = dm_channel(a, b)
            ts = 1_764_000_000_000 + i

            op = functools.partial(
                append_message,
                sender=a,
                ref=f"{prefix}{i}",
                channel=channel,
                members=[a, b],
                body=text,
                ts=ts,
            )
            await store.write(op)

    start, cpu = time.perf_counter(), _cpu()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        async with trio.open_nursery() as senders_nursery:
            for _ in range(window):
                senders_nursery.start_soon(sender)
        elapsed, used = time.perf_counter() - start, _cpu() - cpu
        store.close()
    return elapsed, used


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    *, messages: int, pairs: int, body: int, window: int, keep: str | None = None
) -> dict[str, Any]:
    """Fill a fresh data directory and count its pages; bytes per message by sub-database."""
    tmp = tempfile.mkdtemp(prefix="chatd-bench-storage-")
    path = os.path.join(tmp, "data")
    try:
        elapsed, cpu = trio.run(
            lambda: fill(path, messages=messages, pairs=pairs, body=body, window=window)
        )
        stats = page_stats(path)
        per_db = {
            name: round(st["bytes"] / messages, 1)
            for name, st in stats.items()
            if not name.startswith("_") and st["bytes"]
        }
        growing = {k: v for k, v in per_db.items() if k in ("messages", "inboxes", "refs")}
        return {
            "messages": messages,
            "pairs": pairs,
            "body": body,
            "window": window,
            "seconds": round(elapsed, 2),
            "msgs_per_s": round(messages / elapsed),
            "cpu_us_per_msg": round(cpu / messages * 1e6, 1),
            "bytes_per_message": per_db,
            "bytes_per_message_total": round(sum(per_db.values()), 1),
            "bytes_per_message_growing": round(sum(growing.values()), 1),
            "used_bytes_per_message": round(stats["_env"]["used_bytes"] / messages, 1),
            "pages": stats,
        }
    finally:
        if keep:
            shutil.move(path, keep)
        shutil.rmtree(tmp, ignore_errors=True)


def add_parser(sub: Any) -> None:
    """``storage`` in ``python -m bench``'s sub-commands."""
    p = sub.add_parser("storage", help="LMDB bytes per stored 1:1 message, by sub-database")
    p.add_argument("--messages", type=int, default=200_000, help="DMs stored (200000)")
    p.add_argument("--pairs", type=int, default=1000, help="1:1 pairs, round-robin (1000)")
    p.add_argument("--body", type=int, default=100, help="body characters (100)")
    p.add_argument("--window", type=int, default=64, help="sends in flight (64)")
    p.add_argument("--keep", metavar="DIR", help="move the filled data directory here")
    p.add_argument("--out", type=Path, default=report.DEFAULT_OUT, help="JSON directory")
    p.set_defaults(scenario="storage")


def main(args: argparse.Namespace) -> int:
    """Measure, print the summary and write ``storage-<stamp>.json``."""
    load = os.getloadavg()
    result: dict[str, Any] = {
        "scenario": "storage",
        "git": report.git(),
        "machine": report.machine(),
        "loadavg_before": load,
    }
    result.update(
        measure(
            messages=args.messages,
            pairs=args.pairs,
            body=args.body,
            window=args.window,
            keep=args.keep,
        )
    )
    result["loadavg_after"] = os.getloadavg()
    summary = {
        k: result[k]
        for k in (
            "messages",
            "bytes_per_message",
            "bytes_per_message_total",
            "msgs_per_s",
            "cpu_us_per_msg",
        )
    }
    print(json.dumps(summary, indent=2))
    os.makedirs(args.out, exist_ok=True)
    path = Path(args.out) / f"storage-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0
