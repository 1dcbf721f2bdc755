"""Where an idle chatd connection's memory goes.

    python -m bench.memprofile [--conns 2000] [--top 25]

Runs chatd's ``serve()`` in this process under ``tracemalloc`` (bench config, temp data dir),
opens ``--conns`` authenticated idle connections from one load-client process, and prints the
Python allocations that appeared, grouped by source line, in bytes per connection, next to the
process RSS growth per connection (the difference is allocator overhead and non-Python memory).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import tomllib
import tracemalloc
from pathlib import Path
from typing import Any

import trio

from bench import targets, users
from bench.fleet import Fleet
from bench.procs import Procs, rss_kib


async def profile(args: argparse.Namespace, workdir: Path) -> list[tuple[str, float, int]]:
    from chatd.config import from_mapping
    from chatd.server import serve

    data: dict[str, Any] = tomllib.loads(targets.BENCH_CONFIG)
    data["server"].update(listen="127.0.0.1:0", data=str(workdir / "data"))
    config = from_mapping(data)
    procs = Procs()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, config)
        try:
            names = [f"mem{i:03d}" for i in range(args.users)]
            tokens = await trio.to_thread.run_sync(users.signup_and_login, server.url, names)
            fleet = Fleet(
                procs, workdir, host=server.host, port=server.port, path="/v1/ws",
                clients=1, cpus=None, max_secs=600,
            )  # fmt: skip
            sessions: list[tuple[str, str | None]] = [
                (tokens[names[i % len(names)]], None) for i in range(args.conns)
            ]
            await trio.sleep(0.5)
            gc.collect()
            rss0, snap0 = rss_kib(os.getpid()), tracemalloc.take_snapshot()
            reply = await trio.to_thread.run_sync(fleet.connect, sessions)
            await trio.sleep(1.0)
            gc.collect()
            rss1, snap1 = rss_kib(os.getpid()), tracemalloc.take_snapshot()
            held = reply["open"]
            await trio.to_thread.run_sync(fleet.close)
        finally:
            procs.stop_all()
            server.drain()
    diffs = snap1.compare_to(snap0, "lineno")
    total = sum(d.size_diff for d in diffs)
    head = (
        f"{held} connections: RSS +{(rss1 - rss0) / held:.2f} KiB/conn (tracemalloc's own "
        f"bookkeeping included), traced Python allocations +{total / held / 1024:.2f} KiB/conn"
    )
    rows = [(head, 0.0, 0)]
    for d in diffs[: args.top]:
        frame = d.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        line = _source(frame.filename, frame.lineno)
        rows.append((f"{where}  {line}", d.size_diff / held, d.count_diff))
    return rows


def _source(filename: str, lineno: int) -> str:
    try:
        with open(filename) as f:
            for i, text in enumerate(f, 1):
                if i == lineno:
                    return text.strip()[:70]
    except OSError:
        pass
    return ""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.memprofile")
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, help="also write the table to this file")
    args = p.parse_args(argv)
    tracemalloc.start(1)
    workdir = Path(tempfile.mkdtemp(prefix="chatd-memprofile-"))
    try:
        rows = trio.run(profile, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = [rows[0][0], f"{'bytes/conn':>10} {'objects':>8}  where"]
    lines += [f"{per:10.0f} {count:8d}  {where}" for where, per, count in rows[1:]]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
