"""The shards' link through Redis 7: one stream per shard for durable records, one pub/sub
channel per shard for ephemeral signals.

Durable traffic (a message for members homed on another shard) goes to the destination's
stream ``chatd:stream:{shard}``. Each shard reads only its own stream, as the consumer named
after itself in the group ``chatd``, so a shard that restarts gets back exactly the entries it
was handed before and never acknowledged. An entry is acknowledged only once the handler says
it applied it durably (or found it a duplicate): delivery is at least once, and the handler's
idempotence turns that into exactly once.

Ephemeral traffic (typing, presence) is published on ``chatd:live:{shard}``: nothing is kept
for a shard that is not listening, which is what such signals want.

A Redis outage is a state, not an error: :class:`Broker` marks itself down, keeps retrying with
capped, jittered backoff, and comes back up by itself. Its deadlines count the loop's progress
(:class:`~chatd.cluster.steady.SteadyClock`), so a shard whose own loop stalls does not take
Redis for down. Only :meth:`Broker.send` raises
(:class:`BrokerDown`), because its caller must keep the records (in its outbox) to send later.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import coredis
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from coredis.commands.constants import CommandName
from coredis.exceptions import RedisError, StreamDuplicateConsumerGroupError
from coredis.retry import NoRetryPolicy
from coredis.tokens import PureToken
from coredis.typing import Key

from chatd.cluster.steady import SteadyClock

log = logging.getLogger("chatd.cluster")

#: The one field of a stream entry: the caller's payload (msgpack, opaque here).
FIELD = b"r"
#: Longest pause between two reconnection attempts, before jitter.
MAX_BACKOFF = 2.0
#: coredis' own limits (connect, reply, subscription), in real seconds: a backstop only. The
#: broker's deadlines count loop progress (:mod:`chatd.cluster.steady`), and coredis' would
#: otherwise trip whenever the loop stalls for their length, dropping a healthy connection.
BACKSTOP = 60.0

#: What a Redis outage looks like from here: coredis' errors (ConnectionError, including
#: BusyLoadingError while a restarted server replays its AOF, and the server's own error
#: replies), socket errors and timeouts (builtin TimeoutError is an OSError), our deadlines.
OUTAGE: tuple[type[BaseException], ...] = (
    RedisError,
    OSError,
    trio.TooSlowError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)

Entry = tuple[str, bytes | None]


def stream_key(shard: str) -> str:
    """The stream that holds the durable records for ``shard``."""
    return f"chatd:stream:{shard}"


def live_channel(shard: str) -> str:
    """The pub/sub channel of ``shard``'s ephemeral signals."""
    return f"chatd:live:{shard}"


def redact(url: str) -> str:
    """``url`` without its password (in the userinfo or a ``password`` query argument), for
    /healthz and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


C = TypeVar("C", bound=coredis.BaseConnection)


def _closing(cls: type[C]) -> type[C]:
    """``cls`` with a ``run`` that closes the connection's anyio memory streams however it
    ends.

    coredis 6.9 creates them in the connection's ``__init__`` and closes them only once
    connected, so every failed attempt (each retry while Redis is down) leaves six unclosed
    streams behind: a ResourceWarning each when collected, whenever the collector runs (with
    the tests' ``filterwarnings = error``, a failure of whichever test is running then)."""

    class Closing(cls):  # type: ignore[valid-type, misc]
        async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            try:
                await super().run(task_status=task_status)
            finally:
                for value in list(vars(self).values()):
                    if isinstance(value, MemoryObjectSendStream | MemoryObjectReceiveStream):
                        value.close()

    Closing.__name__ = Closing.__qualname__ = f"Closing{cls.__name__}"
    return Closing


def connect(url: str, timeout: float, read_timeout: float) -> coredis.Redis[bytes]:
    """A client (to be entered: ``async with``) for ``url`` whose calls give up after
    ``timeout`` seconds to connect and ``read_timeout`` seconds to answer (real time), without
    retrying: retries are the broker's (its loops, or the caller's outbox for
    :meth:`Broker.send`)."""
    pool = coredis.ConnectionPool.from_url(
        url, connect_timeout=timeout, stream_timeout=read_timeout
    )
    pool.connection_class = _closing(pool.connection_class)
    return coredis.Redis(connection_pool=pool, retry_policy=NoRetryPolicy())


def _entries(response: Any, **_: Any) -> list[Entry]:
    """XREADGROUP's reply as ``[(entry_id, payload or None)]``.

    coredis' own parser fails (TypeError) on the nil that Redis returns for a pending entry
    whose data was trimmed away, and one such entry must not wedge the whole pending list, so
    the reply is read here: ``{stream: [[id, [field, value, ...] or nil], ...]}`` or nil.
    """
    out: list[Entry] = []
    if not response:
        return out
    for entries in cast(dict[bytes, list[list[Any]]], response).values():
        for entry in entries:
            identifier, flat = entry[0], entry[1]
            payload: bytes | None = None
            if flat:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                payload = fields.get(FIELD)
            out.append((bytes(identifier).decode(), payload))
    return out


class BrokerDown(Exception):
    """Redis cannot be reached now."""


class Broker:
    """This shard's link to Redis: its inbound stream, outbound XADDs, and ephemeral pub/sub."""

    #: Seconds between two re-reads of this consumer's pending entries (handed to the handler,
    #: not acknowledged). An attribute rather than an argument: only tests change it.
    pending_every: float = 3.0

    def __init__(
        self,
        url: str,
        shard: str,
        *,
        maxlen: int = 200_000,
        group: str = "chatd",
        block_ms: int = 1000,
        batch: int = 512,
        retry: float = 0.5,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.shard = shard
        self.stream = stream_key(shard)
        self.channel = live_channel(shard)
        self._maxlen = maxlen
        self._group = group
        self._block_ms = block_ms
        self._batch = batch
        self._retry = retry
        self._timeout = timeout
        self._client: coredis.Redis[bytes] | None = None
        #: Deadlines of Redis calls count the loop's progress, not wall time (see steady.py).
        self.clock = SteadyClock()
        self._up = False
        self._since = time.time()
        #: Records handed to Redis by :meth:`send`.
        self.sent = 0
        #: Records handed to ``on_records`` (a redelivered entry counts again).
        self.received = 0
        #: Entries acknowledged (XACK's count).
        self.acked = 0
        #: Failed Redis operations, plus entries that were trimmed before they were acknowledged.
        self.errors = 0

    # -- state -------------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up

    def health(self) -> dict[str, Any]:
        """For /healthz: {"state": "up"|"down", "url": url-without-password, "since": unix
        seconds of the last change}"""
        return {
            "state": "up" if self._up else "down",
            "url": redact(self.url),
            "since": self._since,
        }

    def _mark(self, up: bool, cause: BaseException | None = None) -> None:
        if up == self._up:
            return
        self._up = up
        self._since = time.time()
        if up:
            log.info("redis %s: up", redact(self.url))
        else:
            log.warning("redis %s: down (%s)", redact(self.url), _describe(cause))

    def _backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures: doubling from ``retry``,
        capped at about 2 s, jittered so that shards do not reconnect in lockstep."""
        ceiling = max(self._retry, MAX_BACKOFF)
        delay = min(self._retry * 2.0 ** min(failures, 16), ceiling)
        return delay * random.uniform(0.5, 1.0)

    # -- the long-running part ---------------------------------------------------------------

    async def run(
        self,
        on_records: Callable[[list[tuple[str, bytes]]], Awaitable[Sequence[str]]],
        on_live: Callable[[bytes], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Runs forever (until cancelled): keeps a connection, ensures the consumer group on
        this shard's stream (created at id "0" so nothing added before the group existed is
        missed), and feeds records: first this consumer's pending entries (delivered before a
        crash but never acked), then new ones, in stream order, in batches of up to ``batch``.
        ``on_records([(entry_id, payload)])`` returns the entry ids to XACK; the others stay
        pending and are offered again every ``pending_every`` seconds. Also calls
        ``on_live(payload)`` for each message on this shard's pub/sub channel.

        A Redis outage marks the broker down; it retries with backoff and marks itself up
        again, and never raises for it. Exceptions of the handlers propagate.
        ``task_status.started()`` comes once the first connection attempt has finished, up or
        down, so the server can start while Redis is down."""
        client = connect(self.url, BACKSTOP, BACKSTOP)
        async with client:
            self._client = client
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.clock.run)
                    nursery.start_soon(self._listen, client, on_live)
                    await self._consume(client, on_records, task_status)
            finally:
                self._client = None
                if self._up:
                    self._up, self._since = False, time.time()
                    log.info("redis %s: stopped", redact(self.url))

    async def _consume(
        self,
        client: coredis.Redis[bytes],
        on_records: Callable[[list[tuple[str, bytes]]], Awaitable[Sequence[str]]],
        task_status: trio.TaskStatus[None],
    ) -> None:
        started = False
        failures = 0
        while True:
            failure: BaseException | None = None
            try:
                await self._ensure_group(client)
                failures = 0
                if not started:
                    started = True
                    task_status.started()
                await self._feed(client, on_records)
            except* OUTAGE as outage:
                failure = outage
            self.errors += 1
            self._mark(False, failure)
            if not started:
                started = True
                task_status.started()
            await trio.sleep(self._backoff(failures))
            failures += 1

    async def _ensure_group(self, client: coredis.Redis[bytes]) -> None:
        with self.clock.fail_after(self._timeout):
            try:
                await client.xgroup_create(self.stream, self._group, "0", mkstream=True)
            except StreamDuplicateConsumerGroupError:
                pass
        self._mark(True)

    async def _feed(
        self,
        client: coredis.Redis[bytes],
        on_records: Callable[[list[tuple[str, bytes]]], Awaitable[Sequence[str]]],
    ) -> None:
        """Pending entries first, then new ones; pending again every ``pending_every`` s."""
        await self._feed_pending(client, on_records)
        due = trio.current_time() + self.pending_every
        while True:
            # Block no longer than until the pending list is due (0 would mean forever).
            wait_ms = max(1, min(self._block_ms, math.ceil((due - trio.current_time()) * 1000)))
            entries = await self._read(client, ">", block_ms=wait_ms)
            self._mark(True)
            if entries:
                await self._deliver(client, entries, on_records)
            if trio.current_time() >= due:
                await self._feed_pending(client, on_records)
                due = trio.current_time() + self.pending_every

    async def _feed_pending(
        self,
        client: coredis.Redis[bytes],
        on_records: Callable[[list[tuple[str, bytes]]], Awaitable[Sequence[str]]],
    ) -> None:
        """This consumer's pending list, once through, in stream order."""
        after = "0"
        while True:
            entries = await self._read(client, after)
            if not entries:
                return
            await self._deliver(client, entries, on_records)
            if len(entries) < self._batch:
                return
            after = entries[-1][0]

    async def _read(
        self, client: coredis.Redis[bytes], after: str, *, block_ms: int | None = None
    ) -> list[Entry]:
        """One XREADGROUP: new entries (``after`` = ">", waiting up to ``block_ms`` for one) or
        this consumer's pending entries with ids above ``after``."""
        args: list[Any] = [b"GROUP", self._group, self.shard, b"COUNT", self._batch]
        if block_ms is not None:
            args += [b"BLOCK", block_ms]
        args += [b"STREAMS", Key(self.stream), after]
        request = client.create_request(CommandName.XREADGROUP, *args, callback=_entries)
        with self.clock.fail_after(self._timeout + (block_ms or 0) / 1000):
            return await request

    async def _deliver(
        self,
        client: coredis.Redis[bytes],
        entries: list[Entry],
        on_records: Callable[[list[tuple[str, bytes]]], Awaitable[Sequence[str]]],
    ) -> None:
        records = [(entry_id, payload) for entry_id, payload in entries if payload is not None]
        # Data trimmed (MAXLEN) while the entry was pending, or an entry not written by send():
        # nothing to hand over, and keeping it pending would only offer it again forever.
        gone = [entry_id for entry_id, payload in entries if payload is None]
        if gone:
            self.errors += len(gone)
            log.error("%s: %d pending entries lost their data (trimmed?)", self.stream, len(gone))
        done = list(gone)
        if records:
            self.received += len(records)
            done += await on_records(records)
        if done:
            with self.clock.fail_after(self._timeout):
                self.acked += await client.xack(self.stream, self._group, done)

    async def _listen(self, client: coredis.Redis[bytes], on_live: Callable[[bytes], None]) -> None:
        """Subscribe to this shard's live channel, and subscribe again after an outage (what
        was published meanwhile is gone, as ephemeral signals should be)."""
        failures = 0
        while True:
            failure: BaseException | None = None
            try:
                async with client.pubsub(
                    channels=[self.channel],
                    ignore_subscribe_messages=True,
                    retry_policy=None,  # ours, below, with the same backoff as the stream
                    subscription_timeout=BACKSTOP,
                ) as pubsub:
                    failures = 0
                    while True:
                        message = await pubsub.get_message()
                        if message is not None and message["type"] == "message":
                            on_live(cast(bytes, message["data"]))
            except* OUTAGE as outage:
                failure = outage
            self.errors += 1
            log.debug("%s: subscription lost (%s)", self.channel, _describe(failure))
            await trio.sleep(self._backoff(failures))
            failures += 1

    # -- calls from other tasks --------------------------------------------------------------

    async def send(self, records: Sequence[tuple[str, bytes]]) -> None:
        """XADD each (dest_shard, payload) to the dest's stream in ONE pipelined round trip,
        with approximate MAXLEN trim at ``maxlen``. Raises BrokerDown if Redis is unreachable
        (within ``timeout`` seconds at most) or refuses the write; the records may then be
        stored or not, so the caller sends them again later and the receiver dedups."""
        if not records:
            return
        client = self._client
        if client is None:
            raise BrokerDown("the broker is not running")
        failure: BaseException | None = None
        try:
            with self.clock.fail_after(self._timeout):
                async with client.pipeline(transaction=False, timeout=BACKSTOP) as pipe:
                    for dest, payload in records:
                        pipe.xadd(
                            stream_key(dest),
                            {FIELD: payload},
                            trim_strategy=PureToken.MAXLEN,
                            threshold=self._maxlen,
                            trim_operator=PureToken.APPROXIMATELY,
                        )
        except* OUTAGE as outage:
            failure = outage
        if failure is not None:
            self.errors += 1
            self._mark(False, failure)
            raise BrokerDown(f"redis {redact(self.url)}: {_describe(failure)}") from failure
        self.sent += len(records)
        self._mark(True)

    async def announce(self, dest_shard: str, payload: bytes) -> bool:
        """PUBLISH on the dest's live channel (ephemeral: typing, presence). False (no raise)
        when down, without even trying: the run loop finds out when Redis is back."""
        client = self._client
        if client is None or not self._up:
            return False
        failure: BaseException | None = None
        try:
            with self.clock.fail_after(self._timeout):
                await client.publish(live_channel(dest_shard), payload)
        except* OUTAGE as outage:
            failure = outage
        if failure is not None:
            self.errors += 1
            self._mark(False, failure)
            return False
        return True


def _describe(error: BaseException | None) -> str:
    """A one-line reason, with the leaves of an exception group."""
    if error is None:
        return "stopped"
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in error.exceptions)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
