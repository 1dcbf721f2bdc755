"""``chatd cluster``: a whole cluster on this machine with one command, for development and tests.

It starts ``redis-server`` (the broker; not needed for one shard) on a loopback port with its
append-only file under DIR/redis, writes DIR/discovery.toml, starts one
``python -m chatd serve --discovery DIR/discovery.toml --shard sI --data DIR/sI`` per shard,
prints each shard's URL and ``chatd cluster ready`` once every shard answers ``GET /healthz``,
and stays in the foreground. SIGTERM or SIGINT stops the shards first (they drain), then Redis,
and exits 0; a child that dies on its own stops the rest and exits 1.

Children run in their own process group, so a Ctrl-C at the terminal reaches only the launcher,
which then stops them in order. Their stderr is copied to the launcher's, each line prefixed
with the child's name.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from chatd.discovery import Shard, load_discovery, write_discovery

#: How long the shards (and Redis) have to come up and answer.
READY_TIMEOUT = 60.0
#: How long a child has to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 30.0
INSTALL_HINT = "install it with: apt-get install -y redis-server"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=int, default=3, metavar="N", help="shard count (3)")
    parser.add_argument(
        "--data", default="./var/cluster", metavar="DIR", help="data directory (./var/cluster)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=9000,
        metavar="BASE",
        help="shard sI listens on BASE+I and takes peers on BASE+100+I (9000); 0 = free ports",
    )
    parser.add_argument(
        "--redis-port", type=int, default=0, metavar="P", help="Redis port (0 = a free one)"
    )
    parser.add_argument("--config", metavar="FILE", help="config file given to every shard")


@dataclass
class Options:
    shards: int = 3
    data: Path = Path("./var/cluster")
    port: int = 9000
    redis_port: int = 0
    config: str | None = None


def main(args: argparse.Namespace) -> int:
    """Run ``chatd cluster`` with parsed arguments; the exit status."""
    opts = Options(
        shards=args.shards,
        data=Path(args.data).resolve(),
        port=args.port,
        redis_port=args.redis_port,
        config=str(Path(args.config).resolve()) if args.config else None,
    )
    problem = _check(opts)
    if problem:
        print(f"chatd cluster: {problem}", file=sys.stderr)
        return 2
    redis_server = None
    if opts.shards > 1:
        redis_server = shutil.which("redis-server") or shutil.which("valkey-server")
        if redis_server is None:
            print(f"chatd cluster: redis-server not found; {INSTALL_HINT}", file=sys.stderr)
            return 1
    return trio.run(_Cluster(opts, redis_server).run)


def _check(opts: Options) -> str:
    if not 1 <= opts.shards <= 99:
        return f"--shards: expected 1 to 99, got {opts.shards}"
    if not 0 <= opts.port or opts.port + 100 + opts.shards > 65535:
        return f"--port: BASE+100+N must be a port number, got {opts.port}"
    if not 0 <= opts.redis_port <= 65535:
        return f"--redis-port: expected 0 to 65535, got {opts.redis_port}"
    return ""


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def plan(opts: Options, free: list[int] | None = None) -> list[Shard]:
    """The shards s1..sN on loopback: ports from ``--port``, or else taken from ``free``."""
    n = opts.shards
    if opts.port:
        urls = [opts.port + i for i in range(1, n + 1)]
        peers = [opts.port + 100 + i for i in range(1, n + 1)]
    else:
        ports = free if free is not None else free_ports(2 * n)
        urls, peers = ports[:n], ports[n : 2 * n]
    return [
        Shard(name=f"s{i + 1}", url=f"http://127.0.0.1:{urls[i]}", peer=f"127.0.0.1:{peers[i]}")
        for i in range(n)
    ]


@dataclass
class _Child:
    name: str
    process: trio.Process
    exited: trio.Event = field(default_factory=trio.Event)


class _Cluster:
    def __init__(self, opts: Options, redis_server: str | None) -> None:
        self.opts = opts
        self.redis_server = redis_server
        self.redis: _Child | None = None
        self.shards: list[_Child] = []
        self.stop = trio.Event()
        self.stopping = False
        self.failure = ""  # why the cluster stopped on its own ("" = a signal asked)
        self.children: trio.Nursery | None = None

    async def run(self) -> int:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            # Watchers and stderr pumps live until their child exits: a child must never block
            # on a full stderr pipe while it drains.
            async with trio.open_nursery() as children:
                self.children = children
                try:
                    async with trio.open_nursery() as control:
                        control.start_soon(self._on_signal, signals)
                        control.start_soon(self._start)
                        await self.stop.wait()
                        control.cancel_scope.cancel()
                finally:
                    with trio.CancelScope(shield=True):
                        clean = await self._shutdown()
        if self.failure:
            print(f"chatd cluster: {self.failure}; stopped", file=sys.stderr)
            return 1
        print("chatd cluster stopped", flush=True)
        return 0 if clean else 1

    def _fail(self, why: str) -> None:
        if not self.stop.is_set():
            self.failure = why
            self.stop.set()

    async def _on_signal(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            print(f"chatd cluster: {signal.Signals(signum).name}: stopping", file=sys.stderr)
            self.stop.set()
            return

    async def _start(self) -> None:
        opts = self.opts
        opts.data.mkdir(parents=True, exist_ok=True)
        free = free_ports(2 * opts.shards + 1)  # distinct: one call binds them all at once
        shards = plan(opts, free)
        broker_url = ""
        try:
            if self.redis_server is not None:
                port = opts.redis_port or free[-1]
                broker_url = f"redis://127.0.0.1:{port}/0"
                self.redis = await self._spawn("redis", self._redis_argv(port), pump=False)
                with trio.move_on_after(READY_TIMEOUT) as waited:
                    while not await _redis_ready(port):  # noqa: ASYNC110 - polls another process
                        await trio.sleep(0.05)
                if waited.cancelled_caught:
                    self._fail(f"redis did not answer PING within {READY_TIMEOUT:g} s")
                    return
            discovery_path = opts.data / "discovery.toml"
            self._warn_if_reshaped(discovery_path, shards)
            write_discovery(discovery_path, shards, broker_url, secrets.token_urlsafe(32))
            for shard in shards:
                child = await self._spawn(shard.name, self._shard_argv(discovery_path, shard))
                self.shards.append(child)
        except OSError as exc:
            self._fail(f"cannot start: {exc}")
            return
        with trio.move_on_after(READY_TIMEOUT) as waited:
            async with trio.open_nursery() as nursery:
                for shard in shards:
                    nursery.start_soon(_wait_healthy, shard)
        if waited.cancelled_caught:
            self._fail(f"the shards did not answer /healthz within {READY_TIMEOUT:g} s")
            return
        for shard in shards:
            print(f"{shard.name} {shard.url} {shard.ws_url}", flush=True)
        if broker_url:
            print(f"broker {broker_url} (data in {opts.data / 'redis'})", flush=True)
        print(
            f"chatd cluster ready: {len(shards)} shard(s), discovery file {discovery_path}",
            flush=True,
        )

    def _redis_argv(self, port: int) -> list[str]:
        assert self.redis_server is not None
        redis_dir = self.opts.data / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        return [
            self.redis_server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(redis_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
        ]

    def _shard_argv(self, discovery_path: Path, shard: Shard) -> list[str]:
        argv = [sys.executable, "-m", "chatd", "serve", "--discovery", str(discovery_path)]
        argv += ["--shard", shard.name, "--data", str(self.opts.data / shard.name)]
        if self.opts.config:
            argv += ["--config", self.opts.config]
        return argv

    def _warn_if_reshaped(self, path: Path, shards: list[Shard]) -> None:
        try:
            before = load_discovery(path, env={}).names
        except Exception:  # absent or unreadable: nothing to compare with
            return
        if before != tuple(s.name for s in shards):
            print(
                f"chatd cluster: warning: {path} listed shards {', '.join(before)}; users whose"
                " home moves will not find their data on the new home",
                file=sys.stderr,
            )

    async def _spawn(self, name: str, argv: list[str], pump: bool = True) -> _Child:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if pump else subprocess.DEVNULL,
            process_group=0,
        )
        child = _Child(name, process)
        assert self.children is not None
        self.children.start_soon(self._watch, child)
        if pump and process.stderr is not None:
            self.children.start_soon(_pump, name, process.stderr)
        return child

    async def _watch(self, child: _Child) -> None:
        status = await child.process.wait()
        child.exited.set()
        if not self.stopping:
            why = f"{child.name} exited with status {status}"
            if child.name == "redis":
                why += f" (see {self.opts.data / 'redis' / 'redis.log'})"
            self._fail(why)

    async def _shutdown(self) -> bool:
        """Stop the shards, then Redis; True when every child exited 0 after SIGTERM."""
        self.stopping = True
        clean = await _stop(self.shards)
        if self.redis is not None:
            clean = await _stop([self.redis]) and clean
        return clean


async def _stop(children: list[_Child]) -> bool:
    """SIGTERM the children still running, wait for them (SIGKILL after STOP_TIMEOUT)."""
    for child in children:
        if child.process.returncode is None:
            child.process.terminate()
    with trio.move_on_after(STOP_TIMEOUT):
        for child in children:
            await child.exited.wait()
    clean = True
    for child in children:
        if child.process.returncode is None:
            print(f"chatd cluster: {child.name} did not stop; killing it", file=sys.stderr)
            child.process.kill()
            await child.exited.wait()
            clean = False
    return clean and all(child.process.returncode == 0 for child in children)


async def _pump(name: str, stream: trio.abc.ReceiveStream) -> None:
    """Copy a child's stderr to ours, each line prefixed with ``[name] ``."""
    prefix = f"[{name}] ".encode()
    pending = b""
    out = sys.stderr.buffer
    async with stream:
        while chunk := await stream.receive_some(65536):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if lines:
                out.write(b"".join(prefix + line + b"\n" for line in lines))
                out.flush()
    if pending:
        out.write(prefix + pending + b"\n")
        out.flush()


async def _redis_ready(port: int) -> bool:
    """Redis answers PING with +PONG (not -LOADING, not refused)."""
    try:
        with trio.fail_after(2):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"PING\r\n")
                return (await stream.receive_some(64)).startswith(b"+PONG")
    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
        return False


async def _wait_healthy(shard: Shard) -> None:
    host, _, port = shard.listen.rpartition(":")
    request = f"GET /healthz HTTP/1.1\r\nHost: {shard.listen}\r\nConnection: close\r\n\r\n"
    while not await _healthz(host.strip("[]"), int(port), request.encode()):  # noqa: ASYNC110
        await trio.sleep(0.05)


async def _healthz(host: str, port: int, request: bytes) -> bool:
    try:
        with trio.fail_after(2):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(request)
                head = b""
                while b"\r\n" not in head and len(head) < 1024:
                    chunk = await stream.receive_some(1024)
                    if not chunk:
                        break
                    head += chunk
                return head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 "))
    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
        return False
