"""The storage API the server calls: synchronous typed reads, transaction functions for writes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Concatenate, ParamSpec, TypeVar

import trio

from storage import retention
from storage.committer import OP_BYTES, Committer
from storage.env import Env
from storage.records import (
    ChannelPage,
    ChannelState,
    Group,
    InboxEntry,
    InboxPage,
    Membership,
    Message,
)
from storage.repo import ReadTx, WriteTx
from storage.upgrade import upgrade

P = ParamSpec("P")
T = TypeVar("T")


class Store:
    """One LMDB environment plus its group committer.

    Reads are synchronous and cheap. A write is a transaction function ``fn(tx)`` over a
    :class:`~storage.repo.WriteTx`: :meth:`write` awaits it (returning its result once
    durable), :meth:`submit` queues it and calls back. Start the committer with
    ``await nursery.start(store.run)`` and call :meth:`close` to drain it.
    """

    def __init__(
        self,
        path: str,
        *,
        map_size: int = 1 << 20,
        max_map_size: int = 1 << 40,
        sync: bool = True,
        writemap: bool = True,
        max_batch: int = 1000,
        max_queue_bytes: int = 64 << 20,
    ) -> None:
        upgrade(path)  # an older on-disk format is converted first (storage/upgrade.py)
        # Write ops see the batch's transaction as a typed WriteTx (one per batch when it runs
        # flat): every transaction function takes one.
        self.env = Env(
            path,
            map_size=map_size,
            max_map_size=max_map_size,
            sync=sync,
            view=WriteTx,
            writemap=writemap,
        )
        self.committer = Committer(self.env, max_batch=max_batch, max_bytes=max_queue_bytes)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the committer until :meth:`close`; then close the environment."""
        try:
            await self.committer.run(task_status=task_status)
        finally:
            self.env.close()

    def close(self) -> None:
        self.committer.close()

    def gather_hooks(self, scope: AbstractContextManager[Any]) -> None:
        """Run each batch's ``on_done`` hooks inside ``with scope:`` (the transport gathers
        the writes they make: one send per connection per batch)."""
        self.committer.hook_scope = scope

    def stats(self) -> dict[str, int]:
        """Group-commit counters (batches and ops committed, bytes queued) and the map's size
        and the part of it in use, in bytes."""
        map_size, map_used = self.env.usage()
        c = self.committer
        return {
            "batches": c.batches,
            "ops": c.ops,
            "queued_bytes": c.queued_bytes,
            "map_size": map_size,
            "map_used": map_used,
        }

    def _read(self, fn: Callable[Concatenate[ReadTx, P], T], *args: P.args, **kw: P.kwargs) -> T:
        with self.env.read() as txn:
            return fn(ReadTx(txn), *args, **kw)

    # -- writes: transaction functions
    async def write(
        self,
        fn: Callable[[WriteTx], T],
        after_commit: Callable[[T], None] | None = None,
        *,
        size: int = OP_BYTES,
    ) -> T:
        """Run ``fn(tx)`` in the next batch; return its result once durable, or raise what it
        raised (nothing it wrote is stored then).

        ``size`` is the op's size hint for the queue's byte cap (see :func:`message_bytes`);
        the call waits for room past the cap. ``after_commit(result)`` runs on the event loop
        in commit order, even if the caller is cancelled after queueing.
        """
        return await self.committer.write(fn, after_commit, size=size)

    def submit(
        self,
        fn: Callable[[WriteTx], T],
        on_done: Callable[[T | None, BaseException | None], None],
        *,
        size: int = OP_BYTES,
    ) -> None:
        """:meth:`write` without waiting: ``on_done(result, error)`` runs after the commit, on
        the event loop, in commit order. Raises ``trio.WouldBlock`` if the queue is full and
        StorageUnavailable once closed."""
        self.committer.submit(fn, on_done, size=size)

    # -- accounts and tokens
    def account(self, user_id: str) -> dict[str, Any] | None:
        return self._read(ReadTx.account_get, user_id)

    async def create_account(self, user_id: str, record: dict[str, Any]) -> None:
        """Conflict if ``user_id`` has an account."""
        await self.write(lambda tx: tx.account_insert(user_id, record))

    async def update_account(self, user_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into the account; KeyError if there is none."""
        return await self.write(lambda tx: tx.account_update(user_id, changes))

    def submit_update(
        self,
        user_id: str,
        changes: dict[str, Any],
        on_done: Callable[[dict[str, Any] | None, BaseException | None], None],
    ) -> None:
        """:meth:`update_account` without waiting (raises ``trio.WouldBlock`` if queue full)."""
        self.submit(lambda tx: tx.account_update(user_id, changes), on_done)

    def token(self, digest: bytes) -> dict[str, Any] | None:
        return self._read(ReadTx.token_get, digest)

    async def put_token(self, digest: bytes, user_id: str, expires_at: int) -> None:
        await self.write(lambda tx: tx.token_put(digest, user_id, expires_at))

    async def delete_token(self, digest: bytes) -> bool:
        return await self.write(lambda tx: tx.token_delete(digest))

    # -- retention
    async def purge_chunk(
        self, db: str, cutoff: int, start: bytes, *, limit: int = 1000
    ) -> tuple[bytes | None, int]:
        """One bounded chunk of a purge of ``db`` ("tokens", "refs", "messages" or
        "inboxes"), as one write op:
        see :func:`retention.purge_chunk`. Returns (next start or None, deleted)."""

        def chunk(tx: WriteTx) -> tuple[bytes | None, int]:
            return retention.purge_chunk(tx.txn, db, cutoff=cutoff, start=start, limit=limit)

        return await self.committer.write(chunk)

    # -- friends
    def friends(self, user_id: str) -> list[tuple[str, str]]:
        return self._read(ReadTx.friends, user_id)

    def friend_state(self, user_id: str, other: str) -> str | None:
        return self._read(ReadTx.friend_get, user_id, other)

    # -- messages and inboxes
    def sent_ack(self, user_id: str, ref: str) -> dict[str, Any] | None:
        """The stored ack of ``user_id``'s send ``ref``, if that send was committed."""
        return self._read(ReadTx.ref_get, user_id, ref)

    def inbox_head(self, user_id: str) -> int:
        return self._read(ReadTx.inbox_head, user_id)

    def inbox(self, user_id: str, after: int, limit: int) -> list[InboxEntry]:
        return self._read(ReadTx.inbox, user_id, after, limit)

    def inbox_page(
        self, user_id: str, after: int, limit: int, max_bytes: int | None = None
    ) -> InboxPage:
        """Entries with seq > ``after`` and the head, in one snapshot; at most ``limit``
        entries and, past the first, ``max_bytes`` of stored messages."""
        return self._read(ReadTx.inbox_page, user_id, after, limit, max_bytes)

    def channel_last_id(self, channel: str) -> int:
        return self._read(ReadTx.last_msg_id, channel)

    def channel_page(
        self, channel: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> list[Message]:
        return self.history(channel, before=before, after=after, limit=limit).messages

    def history(
        self,
        channel: str,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
        max_bytes: int | None = None,
    ) -> ChannelPage:
        """:meth:`channel_page` within a byte budget, saying whether more lie beyond it."""
        return self._read(
            ReadTx.channel_page,
            channel,
            before=before,
            after=after,
            limit=limit,
            max_bytes=max_bytes,
        )

    # -- groups, memberships and read marks
    def group(self, channel: str) -> Group | None:
        return self._read(ReadTx.group_get, channel)

    def membership(self, user_id: str, channel: str) -> Membership | None:
        return self._read(ReadTx.membership_get, user_id, channel)

    def channels(
        self, user_id: str, *, limit: int, after: tuple[int, str] | None = None
    ) -> list[ChannelState]:
        """A page of the user's channels, most recent first; see :meth:`ReadTx.channel_list`."""
        return self._read(ReadTx.channel_list, user_id, limit=limit, after=after)

    # -- outbox
    def outbox_pending(self, topic: str, limit: int, after: int = 0) -> list[tuple[int, bytes]]:
        """At most ``limit`` (seq, record) of ``topic`` with seq > ``after`` not deleted yet,
        oldest first."""
        return self._read(ReadTx.outbox_pending, topic, limit, after)

    async def outbox_delete(self, topic: str, seqs: Iterable[int]) -> int:
        """Delete records of ``topic`` (a consumer has done their work); how many there were."""
        wanted = list(seqs)
        return await self.write(lambda tx: tx.outbox_delete(topic, wanted))


def message_bytes(body: str) -> int:
    """The size hint of a queued message: its body as a str (``sys.getsizeof`` is O(1)), the
    packed UTF-8 copy made in the transaction (at most twice that) and the op's own overhead."""
    return OP_BYTES + 3 * sys.getsizeof(body)
