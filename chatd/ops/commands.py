"""The operator commands of ``chatd`` beside ``serve``: check-config, backup, stats, user,
and the client commands chat, send and listen (docs/operations.md)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

import trio

from chatd.config import Config, ConfigError, load
from chatd.ops import admin
from chatd.ops.datalock import DataDirBusy, DataLock
from storage import offline

#: descriptors a server needs beyond its connections (LMDB, listeners, logs, threads)
SPARE_FDS = 64


def add_parsers(sub: Any) -> None:
    c = sub.add_parser("check-config", help="validate a config (and discovery file); exit 0 or 2")
    _config_args(c)
    c.add_argument("--discovery", metavar="FILE", help="cluster discovery file")
    c.add_argument("--shard", metavar="NAME", help="this shard's name in the discovery file")
    c.add_argument("--listen", metavar="HOST:PORT")

    b = sub.add_parser("backup", help="consistent compacted copy of a data directory (live)")
    b.add_argument("dest", metavar="DEST", help="new or empty directory for the copy")
    _config_args(b)

    s = sub.add_parser("stats", help="users, groups, channels, messages, map use (read-only)")
    _config_args(s)

    k = sub.add_parser("compact", help="rewrite a data directory compacted (server stopped)")
    _config_args(k)

    u = sub.add_parser("user", help="add, disable, enable a user or reset a password")
    _config_args(u)
    verbs = u.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="create an account")
    add.add_argument("user_id")
    add.add_argument("--display-name")
    for verb in ("disable", "enable", "reset-password"):
        v = verbs.add_parser(verb)
        v.add_argument("user_id")
    for p in (add, verbs.choices["reset-password"]):
        p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    for name, text in (
        ("chat", "interactive line-based client"),
        ("send", "send one message; print its ack as JSON"),
        ("listen", "print every incoming frame as a JSON line"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--server", required=True, metavar="URL", help="e.g. http://127.0.0.1:8080")
        p.add_argument("--user", required=True, metavar="NAME")
        if name == "send":
            target = p.add_mutually_exclusive_group(required=True)
            target.add_argument("--to", metavar="USER")
            target.add_argument("--channel", metavar="CHANNEL")
            p.add_argument("body", nargs="+", help="the message ('-': read it from stdin)")
        if name == "listen":
            p.add_argument("--since", type=int, help="replay the inbox after this seq first")
            p.add_argument("--count", type=int, help="exit after this many msg frames")


COMMANDS = ("check-config", "backup", "stats", "compact", "user", "chat", "send", "listen")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config (for server.data)")
    p.add_argument("--data", metavar="DIR", help="data directory (overrides the config)")


def run(args: argparse.Namespace) -> int:
    try:
        return {
            "check-config": check_config,
            "backup": backup,
            "stats": stats,
            "compact": compact,
            "user": user,
            "chat": client_command,
            "send": client_command,
            "listen": client_command,
        }[args.command](args)
    except ConfigError as exc:
        print(f"chatd: config error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"chatd {args.command}: {exc}", file=sys.stderr)
        return 1


def _config(args: argparse.Namespace) -> Config:
    return load(args.config, data=args.data)


def serve_config(args: argparse.Namespace) -> Config:
    """The config of ``serve`` and ``check-config`` from their flags: file, discovery file and
    shard, listen and data (the log flags are serve's, applied by the caller)."""
    return load(
        args.config,
        discovery=args.discovery,
        listen=args.listen,
        data=args.data,
        shard=args.shard,
    )


def check_config(args: argparse.Namespace) -> int:
    config = serve_config(args)
    s = config.server
    print(f"config ok: listen {s.listen}, data {s.data}, log {config.log.format}")
    discovery = config.discovery()
    if discovery is not None:
        names = ", ".join(sh.name for sh in discovery.shards)
        print(f"cluster: shard {s.shard} of {len(discovery.shards)} ({names})")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = s.max_connections + SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < want:
        print(
            f"warning: the open-file limit here is {soft}, below server.max_connections "
            f"+ {SPARE_FDS} = {want} (systemd: LimitNOFILE=)",
        )
    return 0


def backup(args: argparse.Namespace) -> int:
    data = _config(args).server.data
    print(json.dumps(offline.backup(data, args.dest)))
    return 0


def stats(args: argparse.Namespace) -> int:
    data = _config(args).server.data
    print(json.dumps(offline.stats(data)))
    return 0


def compact(args: argparse.Namespace) -> int:
    """``chatd compact``: offline, under the data directory's lock (a running server holds
    it, so this refuses beside one); see docs/operations.md "Compaction"."""
    data = _config(args).server.data
    if not (Path(data) / "data.mdb").is_file():
        raise FileNotFoundError(f"no chatd data in {data}")
    try:
        lock = DataLock(data).acquire()
    except DataDirBusy as exc:
        print(f"chatd compact: {exc}: stop the server first", file=sys.stderr)
        return 1
    from storage.migrate import InUse

    try:
        print(json.dumps(offline.compact(data)))
    except InUse as exc:
        print(f"chatd compact: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    return 0


def _password(args: argparse.Namespace, confirm: bool) -> str:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    env = os.environ.get("CHATD_PASSWORD")
    if env:
        return env
    if not sys.stdin.isatty():
        raise ValueError("no password: set CHATD_PASSWORD, pass --password-stdin or use a tty")
    first = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != first:
        raise ValueError("the passwords differ")
    return first


def user(args: argparse.Namespace) -> int:
    """Through the running server's admin socket; with no server running, in this process
    holding the data directory's lock (a server cannot start meanwhile)."""
    data = _config(args).server.data
    request: dict[str, Any] = {"op": f"user.{args.verb}", "user_id": args.user_id}
    if args.verb in ("add", "reset-password"):
        request["password"] = _password(args, confirm=True)
    if args.verb == "add" and args.display_name:
        request["display_name"] = args.display_name
    try:
        answer = admin.call(data, request)
    except (FileNotFoundError, ConnectionRefusedError):
        answer = _offline(args, data, request)
    if answer is None:
        return 1
    print(json.dumps(answer))
    return 0 if answer.get("ok") else 1


def _offline(args: argparse.Namespace, data: str, request: dict[str, Any]) -> Any:
    if not (Path(data) / "data.mdb").is_file() and args.verb != "add":
        raise FileNotFoundError(f"no chatd data in {data}")
    try:
        lock = DataLock(data).acquire()
    except DataDirBusy as exc:
        print(
            f"chatd user: {exc}, and its admin socket does not answer: refusing to write beside it",
            file=sys.stderr,
        )
        return None
    try:
        return trio.run(_offline_request, _config(args), request)
    finally:
        lock.release()


async def _offline_request(config: Config, request: dict[str, Any]) -> dict[str, Any]:
    from chatd.domain.errors import ChatError
    from chatd.ops.users import GuardedAccounts, UserAdmin
    from storage import Store

    store = Store(
        config.server.data,
        map_size=config.storage.map_size,
        max_map_size=config.storage.max_map_size,
        writemap=config.storage.writemap,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            users = UserAdmin(store, GuardedAccounts(store, config.security))
            server = admin.AdminServer(users, dict)
            try:
                return await server.handle(request)
            except ChatError as exc:
                return {"ok": False, "error": exc.code, "message": exc.message}
        finally:
            store.close()


def client_command(args: argparse.Namespace) -> int:
    from chatd.client import ChatClient, ChatError, HttpError
    from chatd.ops import chat

    password = os.environ.get("CHATD_PASSWORD") or getpass.getpass(f"{args.user}'s password: ")
    client = ChatClient(args.server, args.user, password)
    try:
        if args.command == "chat":
            trio.run(chat.chat, client)
        elif args.command == "send":
            body = sys.stdin.read() if args.body == ["-"] else " ".join(args.body)
            ack = trio.run(chat.send_one, client, args.to, args.channel, body)
            print(json.dumps(ack))
        else:
            trio.run(chat.listen, client, args.since, args.count)
    except (ChatError, HttpError) as exc:
        print(f"chatd {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
