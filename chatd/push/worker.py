"""The push worker: sends the jobs the hook stored, from tasks in the server process.

Jobs are grouped into *streams*, one per (user, subscription, channel). A stream sends at most
one notification at a time and at most one per ``collapse_window``: the first message of a
quiet stream goes out at once (``count`` 1); the ones that arrive within the window after it
wait for the window's end and go out as one notification about the newest, carrying their
``count``. Each notification is one HTTP request; at most ``concurrency`` are in flight.

Before a stream sends, its jobs are checked: one past its expiry (``expiry_hours`` after its
message) is dropped and counted ``expired``; one whose message a device of the user received
(the transport's delivery ack, see ``audience.py``) or read (its read mark) is *moot*: dropped
and counted ``dropped``, as are jobs of a subscription deleted meanwhile.

Outcomes: 2xx sent (the jobs are deleted); 404/410 the subscription is gone (deleted, with
all its jobs); 408/425/429/5xx or no response: retried after ``retry_base * 2^(n-1)`` seconds
(at most ``retry_max``; half fixed, half random jitter; a longer ``Retry-After`` wins) until
the jobs expire; anything else (a 3xx too: redirects are not followed, or an address the
guard refuses at send time) fails: the jobs are deleted and counted ``failed``.

Jobs live in the outbox until one of those ends, so a restart resumes them (the in-memory
retry and collapse state starts over). The hook wakes the worker from the writer thread; the
worker then waits for that commit (an empty write queued behind it) and reads the new records.
"""

from __future__ import annotations

import logging
import math
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from chatd.config import PushConfig
from chatd.push import client, guard, webhook, webpush
from chatd.push.audience import Audience, Deliveries
from chatd.push.hook import TOPIC, Job, decode
from storage import Message, ReadTx, Store, WriteTx

log = logging.getLogger("chatd.push")
LOAD_CHUNK = 1000
PRUNE_INTERVAL = 60.0
OK, GONE, RETRY, FAIL, MOOT = "ok", "gone", "retry", "fail", "moot"


@dataclass
class Counters:
    sent: int = 0  # notifications delivered (one per collapsed run)
    failed: int = 0  # notifications given up on (a permanent error or a gone subscription)
    retried: int = 0  # retries scheduled
    expired: int = 0  # jobs past their expiry
    dropped: int = 0  # moot jobs (received or read meanwhile, or subscription deleted)


class Stream:
    """The pending jobs of one (user, subscription, channel) and its send state."""

    __slots__ = ("jobs", "attempts", "retry_at", "sent_at", "busy")

    def __init__(self) -> None:
        self.jobs: list[tuple[Job, float]] = []  # (job, expiry in trio time)
        self.attempts = 0
        self.retry_at = -math.inf
        self.sent_at = -math.inf
        self.busy = False


def _barrier(tx: WriteTx) -> None:
    """An empty write: it commits after every batch queued before it."""


def classify(status: int) -> str:
    if 200 <= status < 300:
        return OK
    if status in (404, 410):
        return GONE
    if status in (408, 425, 429) or 500 <= status < 600:
        return RETRY
    return FAIL


class Worker:
    def __init__(
        self,
        store: Store,
        config: PushConfig,
        audience: Audience,
        deliveries: Deliveries,
        vapid: webpush.Vapid,
        *,
        ssl_context: ssl.SSLContext | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.config = config
        self.audience = audience
        self.deliveries = deliveries
        self.vapid = vapid
        self.ssl_context = ssl_context
        self.jitter = jitter
        self.counters = Counters()
        self.streams: dict[tuple[str, str, str], Stream] = {}
        self.cursor = 0  # the highest outbox seq read
        self.inflight = 0
        self._kicked = True  # read what is pending at start
        self._changed = trio.Event()
        self._prune_at = 0.0

    @property
    def pending(self) -> int:
        return sum(len(s.jobs) for s in self.streams.values())

    def kick(self) -> None:
        """New jobs were stored (or are being committed): read them soon."""
        self._kicked = True
        self._changed.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._prune_at = trio.current_time() + PRUNE_INTERVAL
            while True:
                if self._kicked:
                    self._kicked = False
                    await self.store.write(_barrier)
                    await self._load()
                next_at = self._dispatch(nursery, trio.current_time())
                self._changed = trio.Event()
                if self._kicked:
                    continue
                with trio.move_on_at(next_at):
                    await self._changed.wait()

    async def _load(self) -> None:
        expiry_ms = self.config.expiry_hours * 3_600_000
        while True:
            records = self.store.outbox_pending(TOPIC, LOAD_CHUNK, self.cursor)
            if not records:
                return
            now, wall = trio.current_time(), time.time() * 1000
            for seq, record in records:
                self.cursor = seq
                try:
                    job = decode(seq, record)
                except (ValueError, TypeError) as exc:
                    log.error("dropping push job %d: %s", seq, exc)
                    continue
                key = (job.user, job.sub, job.channel)
                stream = self.streams.get(key)
                if stream is None:
                    stream = self.streams[key] = Stream()
                stream.jobs.append((job, now + (job.created_ms + expiry_ms - wall) / 1000))
            await trio.lowlevel.checkpoint()

    def _dispatch(self, nursery: trio.Nursery, now: float) -> float:
        """Start the sends that are due; when the next one will be (or an expiry)."""
        window, next_at = self.config.collapse_window, math.inf
        finished: list[int] = []
        for key, stream in list(self.streams.items()):
            if stream.busy:
                continue
            due = max(stream.retry_at, stream.sent_at + window)
            sending = due <= now and self.inflight < self.config.concurrency
            kept = []
            for job, expires in stream.jobs:
                if expires <= now:
                    self.counters.expired += 1
                    finished.append(job.seq)
                elif sending and self._moot(job):
                    self.counters.dropped += 1
                    finished.append(job.seq)
                else:
                    kept.append((job, expires))
                    next_at = min(next_at, expires)
            stream.jobs = kept
            if not kept:
                if stream.sent_at + window <= now:
                    del self.streams[key]  # nothing to send, no window to keep
                else:
                    next_at = min(next_at, stream.sent_at + window)
            elif due > now:
                next_at = min(next_at, due)
            elif sending:
                stream.busy = True
                self.inflight += 1
                nursery.start_soon(self._send, key, stream, [job for job, _ in kept])
            # else: as many sends in flight as allowed; the next one to finish wakes the loop
        if finished:
            nursery.start_soon(self._delete, finished)
        if now >= self._prune_at:
            self._prune_at = now + PRUNE_INTERVAL
            users = {key[0] for key in self.streams}
            self.deliveries.forget(users | self.audience.online())
        return min(next_at, self._prune_at)

    def _moot(self, job: Job) -> bool:
        if self.deliveries.received(job.user, job.inbox):
            return True
        membership = self.store.membership(job.user, job.channel)
        return membership is not None and membership.read >= job.msg_id

    async def _delete(self, seqs: list[int]) -> None:
        await self.store.outbox_delete(TOPIC, seqs)

    async def _send(self, key: tuple[str, str, str], stream: Stream, jobs: list[Job]) -> None:
        user, sub_id, channel = key
        try:
            outcome, retry_after = await self._notify(user, sub_id, jobs)
        except Exception:
            log.exception("push to %s/%s failed", user, sub_id)
            outcome, retry_after = FAIL, 0.0
        finally:
            self.inflight -= 1
            stream.busy = False
            self._changed.set()
        now = trio.current_time()
        done = {job.seq for job in jobs}
        if outcome == RETRY:
            stream.attempts += 1
            self.counters.retried += 1
            stream.retry_at = now + self._backoff(stream.attempts, retry_after)
            return
        stream.jobs = [(j, e) for j, e in stream.jobs if j.seq not in done]
        stream.attempts, stream.retry_at = 0, -math.inf
        if outcome == OK:
            self.counters.sent += 1
            stream.sent_at = now
        elif outcome == FAIL:
            self.counters.failed += 1
        elif outcome == MOOT:
            self.counters.dropped += len(jobs)
        elif outcome == GONE:
            self.counters.failed += 1
            done |= self._forget_subscription(user, sub_id)
            await self.store.write(
                lambda tx: tx.push_sub_delete(user, sub_id),
                lambda _: self.audience.unsubscribed(user, sub_id),
            )
        await self._delete(sorted(done))

    def _forget_subscription(self, user: str, sub_id: str) -> set[int]:
        """Drop every pending job of a deleted subscription; their seqs."""
        seqs: set[int] = set()
        for (u, s, _), stream in self.streams.items():
            if u == user and s == sub_id:
                seqs.update(job.seq for job, _ in stream.jobs)
                self.counters.dropped += len(stream.jobs)
                stream.jobs = []
        return seqs

    def _backoff(self, attempts: int, retry_after: float) -> float:
        cfg = self.config
        delay = min(cfg.retry_max, cfg.retry_base * 2 ** (attempts - 1))
        delay = delay / 2 + self.jitter() * delay / 2
        return max(delay, min(retry_after, cfg.retry_max))

    async def _notify(self, user: str, sub_id: str, jobs: list[Job]) -> tuple[str, float]:
        """Send one notification about ``jobs`` (the newest message, their count)."""
        newest = max(jobs, key=lambda j: j.msg_id)
        with self.store.env.read() as txn:
            tx = ReadTx(txn)
            sub = tx.push_sub_get(user, sub_id)
            message = tx.message_get(newest.channel, newest.msg_id)
        if sub is None or message is None:
            return MOOT, 0.0  # the subscription was deleted meanwhile
        data = webhook.payload(
            user,
            message.channel,
            message.msg_id,
            message.sender,
            message.body,
            message.ts,
            len(jobs),
        )
        allow = self.config.allow_private_networks
        try:
            target = guard.parse(sub.get("url") or sub.get("endpoint"), allow_private=allow)
            address = await guard.resolve(target, allow_private=allow)
        except guard.Refused as exc:
            log.warning("push to %s/%s refused: %s", user, sub_id, exc)
            return FAIL, 0.0
        body, headers = self._request(sub, target, data, message)
        try:
            reply = await client.post(
                target,
                address,
                body,
                headers,
                connect_timeout=self.config.connect_timeout,
                read_timeout=self.config.read_timeout,
                ssl_context=self.ssl_context,
            )
        except client.SendFailed as exc:
            log.info("push to %s/%s: %s", user, sub_id, exc)
            return RETRY, 0.0
        outcome = classify(reply.status)
        if outcome != OK:
            log.info("push to %s/%s: HTTP %d (%s)", user, sub_id, reply.status, outcome)
        return outcome, _retry_after(reply.headers.get(b"retry-after"))

    def _request(
        self, sub: dict[str, Any], target: guard.Target, data: dict[str, Any], message: Message
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        if sub["kind"] == "webpush":
            expires = message.ts / 1000 + self.config.expiry_hours * 3600
            ttl = int(expires - time.time())
            raw = webhook.body(data)
            return webpush.request(
                sub, target, self.vapid, raw, ttl=ttl, topic=f"{data['user_id']}/{message.channel}"
            )
        return webhook.request(sub, data)


def _retry_after(value: bytes | None) -> float:
    """A ``Retry-After`` in seconds (the HTTP-date form is ignored)."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
