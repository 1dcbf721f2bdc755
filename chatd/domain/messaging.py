"""Messages: the send path (validate, commit, ack, fan out) and history.

A send never waits inside the connection's read loop: it is validated, and its unit of work
(``messaging_tx.append_message``) is handed to the group committer with :meth:`Store.submit`;
the committer calls back, in commit order, once the message and its inbox entries are durable.
The callback acks the sending device and delivers ``msg`` frames to every other online device
of every member. Because callbacks run in commit order on one task, every device sees a
channel in msg_id order and its inbox in seq order, with no per-channel lock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import trio

from chatd.domain import channels, validate
from chatd.domain.accounts import now_ms
from chatd.domain.errors import (
    BadRequest,
    ChatError,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
)
from chatd.domain.messaging_tx import Appended, append_message
from chatd.domain.ports import DeviceSink, OutboxHook, Relay, Remote, Router, Shared
from chatd.domain.ratelimit import RateLimiter
from chatd.domain.sessions import Sessions
from storage import InboxEntry, Message, StorageUnavailable, Store, message_bytes

log = logging.getLogger("chatd.messaging")
HISTORY_DEFAULT, HISTORY_MAX = 50, 100
ENVELOPE = 1024  # bytes kept free in a history reply for its own fields around the messages


def message_view(m: Message) -> dict[str, Any]:
    """A message as history returns it (no inbox seq: history is per channel)."""
    return {"channel": m.channel, "msg_id": m.msg_id, "from": m.sender, "body": m.body, "ts": m.ts}


def msg_frame(seq: int, m: Message) -> dict[str, Any]:
    return {
        "type": "msg",
        "inbox": seq,
        "channel": m.channel,
        "msg_id": m.msg_id,
        "from": m.sender,
        "body": m.body,
        "ts": m.ts,
    }


def inbox_frame(entry: InboxEntry) -> dict[str, Any]:
    return msg_frame(entry.seq, entry.message)


def fit_bytes(views: list[dict[str, Any]], budget: int, *, newest: bool) -> list[dict[str, Any]]:
    """The longest run of ``views`` whose encoding takes at most ``budget`` bytes, kept from
    the newest end (``newest``) or the oldest; never empty if ``views`` is not.

    Sizes are those of compact UTF-8 JSON, which is never smaller than msgpack for a message,
    so the bound holds for both subprotocols.
    """
    kept: list[dict[str, Any]] = []
    total = 0
    for view in reversed(views) if newest else views:
        size = len(json.dumps(view, separators=(",", ":"), ensure_ascii=False).encode()) + 1
        if kept and total + size > budget:
            break
        kept.append(view)
        total += size
    return kept[::-1] if newest else kept


def history_limits(args: dict[str, Any]) -> tuple[int | None, int | None, int]:
    """(before, after, limit) from request arguments; limit defaults to 50, capped at 100."""
    limit = args.get("limit")
    if limit is None:
        limit = HISTORY_DEFAULT
    if limit < 1:
        raise BadRequest("limit must be at least 1")
    return args.get("before"), args.get("after"), min(limit, HISTORY_MAX)


class Messenger:
    """The send path and history. Collaborators are given, never looked up."""

    def __init__(
        self,
        store: Store,
        sessions: Sessions,
        router: Router,
        *,
        send_limiter: RateLimiter,
        history_limiter: RateLimiter,
        max_body: int,
        reply_bytes: int,
        outbox_hooks: Sequence[OutboxHook] = (),
        relay: Relay | None = None,
        remote: Remote | None = None,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.router = router
        self.send_limiter = send_limiter
        self.history_limiter = history_limiter
        self.max_body = max_body
        #: Bytes one reply to a device may take (a history page, a stretch of a replay): half
        #: the outbound cap, so a device that keeps up always has room for it.
        self.reply_bytes = reply_bytes
        self.outbox_hooks = tuple(outbox_hooks)
        self.relay = relay  # a cluster: members homed elsewhere get relayed records
        self.remote = remote  # a cluster: sends that need another shard first

    def send(
        self,
        device: DeviceSink,
        ref: str,
        body: str,
        *,
        to: str | None = None,
        channel: str | None = None,
    ) -> None:
        """Validate and queue one send. Raises a ChatError (with ``ref``) if refused at once;
        otherwise ``device.finished(ack or error)`` is called exactly once, now (a resend of a
        committed ref) or from the commit hook, and deliveries follow the ack.

        A resend of a committed ref gets the original ack, whatever the frame says now (the
        channel may since have become forbidden, or the limit reached). The happy path does
        not look the ref up: the commit does (``append_message`` answers a known ref with its
        first ack and stores nothing), so only a refusal costs a read here. A resend that is
        not refused takes a rate-limit token like any send.
        """
        user = device.user_id
        try:
            self._send(device, user, ref, body, to, channel)
        except ChatError as exc:
            known = self._sent_ack(user, ref)
            if known is not None:
                device.finished({"type": "ack", "ref": ref, **known})
                return
            exc.ref = ref
            raise
        except StorageUnavailable as exc:
            raise Unavailable(str(exc), ref=ref) from None

    def _sent_ack(self, user: str, ref: str) -> dict[str, Any] | None:
        try:
            return self.store.sent_ack(user, ref)
        except StorageUnavailable:
            return None

    def _send(
        self,
        device: DeviceSink,
        user: str,
        ref: str,
        body: str,
        to: str | None,
        channel: str | None,
    ) -> None:
        wait = self.send_limiter.take(user)
        if wait:
            raise RateLimited("sending too fast", retry_after=wait)
        if len(body) > self.max_body:
            raise TooLarge(f"body over {self.max_body} characters")
        members: list[str] | None
        if to is not None:
            to = validate.user_id(to, "to")
            if to == user:
                raise BadRequest("you cannot send to yourself")
            if self.router.home(to).local or self.remote is None:
                if self.store.account(to) is None:
                    raise NotFound(f"no user {to!r}")
            elif not self.remote.knows(to):
                self.remote.resolve(device, ref, body, to)  # sends again once known
                return
            channel, members = channels.dm_channel(user, to), [user, to]
        else:
            channel = channel or ""
            sequencer = self.router.sequencer(channel)
            if sequencer.local or channels.is_group(channel):
                # A group sequenced elsewhere is checked there: its members live there.
                if sequencer.local:
                    channels.check_member(self.store, channel, user)
            elif user not in (channels.dm_members(channel) or ()):
                raise NotFound(f"no channel {channel!r}")
            # A group's members are read again inside the commit (None), so an add or
            # remove racing with this send is wholly before or after it.
            members = None if channels.is_group(channel) else channels.dm_members(channel)
        sequencer = self.router.sequencer(channel)
        if not sequencer.local:
            if self.remote is None:
                raise Unavailable(f"{channel} is sequenced by another shard", retry_after=1.0)
            self.remote.forward(device, ref, channel, body, sequencer)
            return

        def committed(appended: Appended | None, error: BaseException | None) -> None:
            self._committed(device, ref, appended, error)

        try:
            op = self._append_op(user, ref, channel, members, body)
            self.store.submit(op, committed, size=message_bytes(body))
        except trio.WouldBlock:
            raise Unavailable("server busy, retry shortly", retry_after=0.05) from None

    def _committed(
        self, device: DeviceSink, ref: str, appended: Appended | None, error: BaseException | None
    ) -> None:
        if appended is None:
            device.finished(self._commit_error(device, ref, error))
            return
        device.finished({"type": "ack", "ref": ref, **appended.ack})
        self._stored(appended, exclude=device)

    def _append_op(
        self, sender: str, ref: str, channel: str, members: list[str] | None, body: str
    ) -> partial[Appended]:
        """The send's unit of work, for the group committer."""
        return partial(
            append_message,
            sender=sender,
            ref=ref,
            channel=channel,
            members=members,
            body=body,
            ts=now_ms(),
            hooks=self.outbox_hooks,
            relay=self.relay,
        )

    def _stored(self, appended: Appended, exclude: DeviceSink | None = None) -> None:
        """After a send's commit, in commit order: deliveries, and relayed records on their
        way to other shards."""
        if not appended.duplicate:
            self.fan_out(appended.inbox, appended.message, exclude=exclude)
            if appended.relayed and self.relay is not None:
                self.relay.committed()

    def submit_forwarded(
        self,
        sender: str,
        ref: str,
        channel: str,
        body: str,
        on_done: Callable[[Appended | None, BaseException | None], None],
    ) -> None:
        """Queue a send forwarded by the sender's home shard to this one, the channel's
        sequencer (``chatd/cluster/``); ``on_done(appended, error)`` after the commit, in
        commit order. The sender's home checked the rate and size; membership is checked in
        the commit. A known ``ref`` answers its first ack. Raises a ChatError if refused at
        once (``unavailable`` when the commit queue is full)."""
        if len(body) > self.max_body:
            raise TooLarge(f"body over {self.max_body} characters")
        members: list[str] | None = None
        if not channels.is_group(channel):
            members = channels.dm_members(channel)
            if members is None or sender not in members:
                raise NotFound(f"no channel {channel!r}")

        def done(appended: Appended | None, error: BaseException | None) -> None:
            if appended is not None:
                self._stored(appended)
            on_done(appended, error)

        op = self._append_op(sender, ref, channel, members, body)
        try:
            self.store.submit(op, done, size=message_bytes(body))
        except trio.WouldBlock:
            raise Unavailable("server busy, retry shortly", retry_after=0.05) from None

    def _commit_error(self, device: DeviceSink, ref: str, error: BaseException | None) -> ChatError:
        if isinstance(error, ChatError):
            error.ref = ref
            return error
        if isinstance(error, StorageUnavailable):
            return Unavailable(str(error), ref=ref)
        log.error("send %r of %s failed", ref, device.user_id, exc_info=error)
        return Unavailable("message not stored", ref=ref)

    def fan_out(
        self, inbox: dict[str, int], message: Message, exclude: DeviceSink | None = None
    ) -> None:
        """Deliver a stored message (``inbox``: member -> its inbox seq) to every online
        device of those members but ``exclude``."""
        frame: Shared | None = None  # the message's fields: one for every member
        for user, seq in inbox.items():
            devices = self.sessions.devices(user)
            if not devices:
                continue  # offline: the inbox holds it (push hooks in through the outbox)
            if frame is None:
                frame = Shared(message_view(message))
            for device in devices:
                if device is not exclude:
                    device.deliver(seq, frame)

    def history(
        self,
        user_id: str,
        ref: str,
        channel: str,
        *,
        before: int | None,
        limit: int | None,
        device: DeviceSink | None = None,
    ) -> dict[str, Any] | None:
        """The reply to a WebSocket ``history`` frame; None when it comes later, from the
        channel's sequencer shard (a cluster: the history is there, complete)."""
        args = {"before": before, "limit": limit}
        if device is not None and self.remote is not None and isinstance(channel, str):
            place = self.router.sequencer(channel)
            if not place.local:
                self.remote.history(device, ref, channel, args, place)
                return None
        try:
            page = self.history_page(user_id, channel, args)
        except ChatError as exc:
            exc.ref = ref
            raise
        except StorageUnavailable as exc:
            raise Unavailable(str(exc), ref=ref) from None
        return {"type": "history", "ref": ref, "channel": channel, **page}

    def history_page(self, user_id: str, channel: str, args: dict[str, Any]) -> dict[str, Any]:
        """``{"messages": [...], "more": bool}``: one page of ``channel`` for ``user_id``.

        The WebSocket ``history`` frame and ``GET /v1/channels/{id}/messages`` both come here,
        so they share one rate limit per user (``limits.history_rate``/``history_burst``) and
        one byte budget: the messages take at most :attr:`reply_bytes` less the envelope (one
        message always goes out, so paging makes progress). ``more`` says messages lie beyond
        the page in its direction: older ones (page on with ``before`` = the first msg_id), or
        newer ones for an ``after`` page.
        """
        wait = self.history_limiter.take(user_id)
        if wait:
            raise RateLimited("history requests too fast", retry_after=wait)
        channels.check_member(self.store, channel, user_id)
        before, after, limit = history_limits(args)
        budget = self.reply_bytes - ENVELOPE
        page = self.store.history(
            channel, before=before, after=after, limit=limit, max_bytes=budget
        )
        views = [message_view(m) for m in page.messages]
        kept = fit_bytes(views, budget, newest=after is None)
        return {"messages": kept, "more": page.more or len(kept) < len(views)}
