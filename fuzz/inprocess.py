"""A real chatd (real app, real LMDB in a scratch directory) in a thread of this process, fed
raw bytes through a socket pair: the server's own HTTP connection code reads them as it reads
an accepted TCP socket, so a harness reaches everything a network peer does, without a
network, a listener round trip or a server start per input.

What counts as a crash (:class:`Crash`): anything chatd logs at ERROR (its last-resort
handlers log every unexpected exception: the HTTP connection's 500, a route's 500, a WebSocket
closed 1011), a ``500`` status line, or an exchange that does not end (a wedge) within
:data:`WEDGE_SECONDS` once the client has sent everything and half-closed.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

import trio
import trio.testing

from chatd.config import Config, LimitsConfig, SecurityConfig, ServerConfig, StorageConfig
from chatd.net.http import HttpConnection
from chatd.server import Server, serve

WEDGE_SECONDS = 5.0
CLIENT = "127.0.0.1"
PASSWORD = "correct horse"
STATUS_500 = re.compile(rb"HTTP/1\.[01] 500 ")


def loopback_only(event: str, args: tuple[object, ...]) -> None:
    """An audit hook: this process reaches no address off this machine, nor a resolver.

    The fuzzer can make anything the API allows, a push subscription to a public URL too, and
    the push worker would then connect to it. Here such a lookup fails as an unknown host and
    such a connect as an unreachable network, which chatd must handle anyway.
    """
    if event == "socket.getaddrinfo":
        host = args[0]
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if host is not None and not _loopback(str(host)):
            raise socket.gaierror(socket.EAI_NONAME, "fuzzing: no name resolution")
    elif event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and not _loopback(str(address[0])):
            raise OSError(errno.ENETUNREACH, "fuzzing: no network")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class Crash(AssertionError):
    """The server did something no input may make it do."""


class ErrorLog(logging.Handler):
    """Collects what chatd logs at ERROR and above (the last-resort handlers' reports)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(logging.Formatter().format(record))


def config(data: Path) -> Config:
    """The test config: generous rate limits (a 429 hides the code behind it) except for
    password hashing, short timeouts, no fsync (a scratch directory), the client a trusted
    proxy (so ``X-Forwarded-For`` is read)."""
    limits = LimitsConfig(
        send_rate=1e9, send_burst=10**9, read_rate=1e9, read_burst=10**9,
        history_rate=1e9, history_burst=10**9, typing_rate=1e9, typing_burst=10**9,
        api_rate=1e9, api_burst=10**9, login_rate=5.0, login_burst=5,
        signup_rate=5.0, signup_burst=5, max_sessions_per_user=1000,
    )  # fmt: skip
    server = ServerConfig(
        listen="127.0.0.1:0", data=str(data), drain_timeout=2.0, header_timeout=1.0,
        keepalive_timeout=1.0, hello_timeout=1.0, trusted_proxies=(CLIENT,),
    )  # fmt: skip
    storage = StorageConfig(sync=False, unsafe_fast_commit=True)
    security = SecurityConfig(argon2_memory_kib=7168, argon2_time_cost=5)
    return Config(server=server, limits=limits, storage=storage, security=security).validate()


def scratch_dir() -> Path:
    """A data directory of this process; those of processes that are gone are removed
    (libFuzzer ends the process with ``exit()``, so no clean-up of ours runs)."""
    root = Path(os.environ.get("CHATD_FUZZ_WORK", tempfile.gettempdir())) / "chatd-fuzz-data"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("data-*"):
        pid = int(old.name.removeprefix("data-"))
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    return root / f"data-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class InProcessServer:
    """``serve()`` in a daemon thread; :meth:`exchange` runs one connection's bytes."""

    def __init__(self) -> None:
        sys.addaudithook(loopback_only)  # for the life of the process: it cannot be removed
        self.data = scratch_dir()
        shutil.rmtree(self.data, ignore_errors=True)
        self.errors = ErrorLog()
        logging.getLogger("chatd").addHandler(self.errors)
        logging.getLogger("chatd").propagate = False  # reports are collected, not printed
        self._ready = threading.Event()
        self._server: Server | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chatd", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise RuntimeError("the in-process server did not start") from self._failure

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by __init__ or the next exchange
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._server = await nursery.start(serve, config(self.data))
            self._ready.set()
            await self._stop.wait()
            self._server.drain()

    def close(self) -> None:
        """Drain the server and remove its data (when the process ends on its own)."""
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            self._thread.join(10)
        shutil.rmtree(self.data, ignore_errors=True)

    # -- inputs
    def exchange(self, data: bytes) -> bytes:
        """Write ``data`` as one client connection would, half-close, and return everything
        the server wrote back; :class:`Crash` if the server broke."""
        if self._failure is not None:
            raise Crash("the server stopped") from self._failure
        del self.errors.records[:]
        out: bytes = trio.from_thread.run(self._exchange, data, trio_token=self._token)
        if self.errors.records:
            raise Crash("chatd logged an error:\n" + "\n".join(self.errors.records))
        if STATUS_500.search(out):
            raise Crash(f"a 500 response: {out[:500]!r}")
        return out

    async def _exchange(self, data: bytes) -> bytes:
        assert self._server is not None
        http = self._server.app.http
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        # Counted as the accept loop counts it (the connection releases it). The "peer" is a
        # trusted proxy, so the forwarding header is parsed too.
        http.lifecycle.connections.admit(theirs, CLIENT, proxy=True)
        client = trio.socket.from_stdlib_socket(ours)
        received = bytearray()
        try:
            with trio.fail_after(WEDGE_SECONDS):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(HttpConnection(http, theirs, CLIENT).serve)
                    view = memoryview(data)
                    while view:
                        view = view[await client.send(view) :]
                    # Let the server act on everything (and commit it, so acks go out) before
                    # the end of input ends the connection.
                    await self._settle()
                    client.shutdown(socket.SHUT_WR)
                    while chunk := await client.recv(65536):
                        received += chunk
                # The connection is over (an upgraded one too: EOF came after its close);
                # what it left to the committer is written before the next input.
                await self._settle()
        except trio.TooSlowError:
            raise Crash(f"wedged: no end {WEDGE_SECONDS} s after the input") from None
        finally:
            client.close()
        return bytes(received)

    async def _settle(self) -> None:
        assert self._server is not None
        committer = self._server.app.store.committer
        while True:
            await trio.testing.wait_all_tasks_blocked()
            if not committer.queued_bytes:
                return
            await trio.sleep(0.0005)

    # -- set-up through the same path
    def request(self, method: str, path: str, body: object = None, token: str = "") -> object:
        """One HTTP request through :meth:`exchange`; its JSON answer."""
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(payload)}\r\n"
        if token:
            head += f"authorization: Bearer {token}\r\n"
        raw = self.exchange(head.encode() + b"connection: close\r\n\r\n" + payload)
        _, _, answer = raw.partition(b"\r\n\r\n")
        return json.loads(answer) if answer else None

    def user(self, user_id: str) -> str:
        """Sign ``user_id`` up and log in: its bearer token."""
        self.request("POST", "/v1/signup", {"user_id": user_id, "password": PASSWORD})
        login = self.request("POST", "/v1/login", {"user_id": user_id, "password": PASSWORD})
        assert isinstance(login, dict) and "token" in login, login
        return str(login["token"])
