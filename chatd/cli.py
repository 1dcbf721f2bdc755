"""The ``chatd`` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable

import trio

from chatd import __version__
from chatd.cluster import launch, reshard
from chatd.config import Config, ConfigError
from chatd.ops import commands, logs
from chatd.ops.reload import Reloader
from chatd.server import serve
from storage import StorageUnavailable


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatd", description="A dense, durable chat server.")
    parser.add_argument("--version", action="version", version=f"chatd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the server in the foreground")
    s.add_argument("--config", metavar="FILE", help="TOML config file (see conf/chatd.toml)")
    s.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (127.0.0.1:8080)")
    s.add_argument("--data", metavar="DIR", help="LMDB data directory (./var/chatd)")
    s.add_argument("--shard", metavar="NAME", help="shard name (required with --discovery)")
    s.add_argument(
        "--discovery",
        metavar="FILE",
        help="cluster discovery file (see conf/cluster.example.toml): run the shard --shard "
        "names, listening where its url says unless --listen is given",
    )
    s.add_argument("--log-level", help="logging level (config log.level: INFO)")
    s.add_argument(
        "--log-format", choices=("text", "json"), help="log lines (config log.format: text)"
    )
    c = sub.add_parser(
        "cluster",
        help="run a local cluster: redis-server and N shards on loopback, in the foreground",
    )
    launch.add_arguments(c)
    r = sub.add_parser(
        "reshard",
        help="offline: move users and channels after the discovery file's shard list changed",
    )
    reshard.add_arguments(r)
    commands.add_parsers(sub)
    return parser


async def _run(config: Config, reread: Callable[[], Config]) -> None:
    """Serve until SIGTERM/SIGINT (drain); SIGHUP reloads (``chatd/ops/reload.py``)."""
    stop = (signal.SIGTERM, signal.SIGINT)
    with trio.open_signal_receiver(*stop, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, config)
            reloader = Reloader(config, reread, server.limiters())
            async for signum in signals:
                if signum == signal.SIGHUP:
                    reloader.reload()
                    continue
                logging.getLogger("chatd").info("%s: draining", signal.Signals(signum).name)
                server.drain()
                break


def _load(args: argparse.Namespace) -> Config:
    """The config as the command line says: file, flags, log flags."""
    config = commands.serve_config(args)
    log = {"level": args.log_level, "format": args.log_format}
    log = {k: v for k, v in log.items() if v is not None}
    return config.replace("log", **log) if log else config


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "cluster":
        return launch.main(args)
    if args.command == "reshard":
        logging.basicConfig(level="INFO", format="%(asctime)s %(message)s")
        return reshard.main(args)
    if args.command in commands.COMMANDS:
        logging.basicConfig(level="WARNING")
        return commands.run(args)
    try:
        config = _load(args)
        logs.setup(config.log)
    except ConfigError as exc:
        print(f"chatd: config error: {exc}", file=sys.stderr)
        return 2
    failures: list[BaseException] = []
    try:
        trio.run(_run, config, lambda: _load(args))
    except* (OSError, StorageUnavailable) as group:
        failures = _leaves(group)
    for failure in failures:
        print(f"chatd: cannot start: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
