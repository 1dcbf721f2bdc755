"""The typed storage API the server calls."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from storage import accounts, groups, messages, retention
from storage.committer import OP_BYTES, Committer
from storage.env import Env, Txn
from storage.groups import ChannelState
from storage.messages import Appended, ChannelPage, InboxEntry, InboxPage, Message


class Store:
    """One LMDB environment plus its group committer.

    Reads are synchronous and cheap; writes are ``async`` and return once durable. Start the
    committer with ``await nursery.start(store.run)`` and call :meth:`close` to drain it.
    """

    def __init__(
        self,
        path: str,
        *,
        map_size: int = 64 << 20,
        max_map_size: int = 1 << 40,
        sync: bool = True,
        max_batch: int = 1000,
        max_queue_bytes: int = 64 << 20,
    ) -> None:
        self.env = Env(path, map_size=map_size, max_map_size=max_map_size, sync=sync)
        self.committer = Committer(self.env, max_batch=max_batch, max_bytes=max_queue_bytes)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the committer until :meth:`close`; then close the environment."""
        try:
            await self.committer.run(task_status=task_status)
        finally:
            self.env.close()

    def close(self) -> None:
        self.committer.close()

    def _read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.env.read() as txn:
            return fn(txn, *args, **kwargs)

    # -- accounts and tokens
    def account(self, user_id: str) -> dict[str, Any] | None:
        return self._read(accounts.get_account, user_id)  # type: ignore[no-any-return]

    async def create_account(self, user_id: str, record: dict[str, Any]) -> None:
        await self.committer.write(partial(accounts.create_account, user_id=user_id, record=record))

    async def update_account(self, user_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return await self.committer.write(
            partial(accounts.update_account, user_id=user_id, changes=changes)
        )

    def submit_update(
        self,
        user_id: str,
        changes: dict[str, Any],
        on_done: Callable[[Any, BaseException | None], None],
    ) -> None:
        """:meth:`update_account` without waiting (raises ``trio.WouldBlock`` if queue full)."""
        fn = partial(accounts.update_account, user_id=user_id, changes=changes)
        self.committer.submit(fn, lambda op: on_done(op.result, op.error))

    def token(self, digest: bytes) -> dict[str, Any] | None:
        return self._read(accounts.get_token, digest)  # type: ignore[no-any-return]

    async def put_token(self, digest: bytes, user_id: str, expires_at: int) -> None:
        await self.committer.write(
            partial(accounts.put_token, digest=digest, user_id=user_id, expires_at=expires_at)
        )

    async def delete_token(self, digest: bytes) -> bool:
        return await self.committer.write(partial(accounts.delete_token, digest=digest))

    # -- retention
    async def purge_chunk(
        self, db: str, cutoff: int, start: bytes, *, limit: int = 1000
    ) -> tuple[bytes | None, int]:
        """One bounded chunk of a purge of ``db`` ("tokens" or "refs"), as one write op:
        see :func:`retention.purge_chunk`. Returns (next start or None, deleted)."""
        fn = partial(retention.purge_chunk, db=db, cutoff=cutoff, start=start, limit=limit)
        return await self.committer.write(fn)

    # -- friends
    def friends(self, user_id: str) -> list[tuple[str, str]]:
        return self._read(accounts.list_friends, user_id)  # type: ignore[no-any-return]

    def friend_state(self, user_id: str, other: str) -> str | None:
        return self._read(accounts.friend_state, user_id, other)  # type: ignore[no-any-return]

    async def request_friend(self, user_id: str, other: str) -> str:
        return await self.committer.write(
            partial(accounts.request_friend, user_id=user_id, other=other)
        )

    async def remove_friend(self, user_id: str, other: str) -> None:
        await self.committer.write(partial(accounts.remove_friend, user_id=user_id, other=other))

    # -- messages and inboxes
    async def append_message(
        self,
        *,
        sender: str,
        ref: str,
        channel: str,
        members: list[str] | None,
        body: str,
        ts: int,
        after_commit: Callable[[Appended], None] | None = None,
    ) -> Appended:
        """Store a message with one inbox entry per member, atomically; idempotent per ref.

        ``members=None`` for a group channel: members are read in the transaction, and
        NotFound / NotMember raised if the group is unknown or the sender not in it.

        ``after_commit`` runs on the event loop in commit order (see storage/committer.py).
        """
        fn = _append_op(sender, ref, channel, members, body, ts)
        return await self.committer.write(fn, after_commit, size=message_bytes(body))

    def submit_message(
        self,
        *,
        sender: str,
        ref: str,
        channel: str,
        members: list[str] | None,
        body: str,
        ts: int,
        on_done: Callable[[Appended | None, BaseException | None], None],
    ) -> None:
        """:meth:`append_message` without waiting: ``on_done(result, error)`` runs after commit,
        on the event loop, in commit order. Raises ``trio.WouldBlock`` if the queue is full."""
        fn = _append_op(sender, ref, channel, members, body, ts)
        self.committer.submit(fn, lambda op: on_done(op.result, op.error), size=message_bytes(body))

    def sent_ack(self, user_id: str, ref: str) -> dict[str, Any] | None:
        """The stored ack of ``user_id``'s send ``ref``, if that send was committed."""
        return self._read(messages.get_ref, user_id, ref)  # type: ignore[no-any-return]

    def inbox_head(self, user_id: str) -> int:
        with self.env.read() as txn:
            return txn.last_id("inboxes", user_id)

    def inbox(self, user_id: str, after: int, limit: int) -> list[InboxEntry]:
        return self._read(messages.read_inbox, user_id, after, limit)  # type: ignore[no-any-return]

    def inbox_page(
        self, user_id: str, after: int, limit: int, max_bytes: int | None = None
    ) -> InboxPage:
        """Entries with seq > ``after`` and the head, in one snapshot; at most ``limit``
        entries and, past the first, ``max_bytes`` of stored messages."""
        return self._read(  # type: ignore[no-any-return]
            messages.read_inbox_page, user_id, after, limit, max_bytes
        )

    def channel_last_id(self, channel: str) -> int:
        with self.env.read() as txn:
            return txn.last_id("messages", channel)

    def channel_page(
        self, channel: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> list[Message]:
        return self._read(  # type: ignore[no-any-return]
            messages.read_channel, channel, before=before, after=after, limit=limit
        )

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
        return self._read(  # type: ignore[no-any-return]
            messages.read_channel_page,
            channel,
            before=before,
            after=after,
            limit=limit,
            max_bytes=max_bytes,
        )

    # -- groups, memberships and read marks
    def group(self, channel: str) -> dict[str, Any] | None:
        return self._read(groups.get_group, channel)  # type: ignore[no-any-return]

    async def create_group(
        self, channel: str, *, name: str, owner: str, members: list[str], created_at: int
    ) -> dict[str, Any]:
        fn = partial(
            groups.create_group,
            channel=channel,
            name=name,
            owner=owner,
            members=members,
            created_at=created_at,
        )
        return await self.committer.write(fn)

    async def add_member(self, channel: str, user_id: str, *, cap: int) -> dict[str, Any]:
        fn = partial(groups.add_member, channel=channel, user_id=user_id, cap=cap)
        return await self.committer.write(fn)

    async def remove_member(self, channel: str, user_id: str) -> dict[str, Any]:
        return await self.committer.write(
            partial(groups.remove_member, channel=channel, user_id=user_id)
        )

    def submit_read(
        self,
        user_id: str,
        channel: str,
        msg_id: int,
        on_done: Callable[[bool | None, BaseException | None], None],
    ) -> None:
        """Raise a read mark without waiting; ``on_done(changed, error)`` after commit."""
        fn = partial(groups.mark_read, user_id=user_id, channel=channel, msg_id=msg_id)
        self.committer.submit(fn, lambda op: on_done(op.result, op.error))

    def channels(
        self, user_id: str, *, limit: int, after: tuple[int, str] | None = None
    ) -> list[ChannelState]:
        """A page of the user's channels, most recent first; see :func:`groups.channel_page`."""
        return self._read(  # type: ignore[no-any-return]
            groups.channel_page, user_id, limit=limit, after=after
        )


def message_bytes(body: str) -> int:
    """The size hint of a queued message: its body as a str (``sys.getsizeof`` is O(1)), the
    packed UTF-8 copy made in the transaction (at most twice that) and the op's own overhead."""
    return OP_BYTES + 3 * sys.getsizeof(body)


def _append_op(
    sender: str, ref: str, channel: str, members: list[str] | None, body: str, ts: int
) -> Callable[[Txn], Appended]:
    return partial(
        messages.append_message,
        sender=sender,
        ref=ref,
        channel=channel,
        members=members,
        body=body,
        ts=ts,
    )
