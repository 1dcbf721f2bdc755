"""Fakes of the domain's ports, for domain tests on a real temporary LMDB (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from chatd.domain.errors import ChatError
from chatd.domain.ports import Place, Shared
from storage import Store


class FakeDevice:
    """A DeviceSink that records what the domain hands it."""

    def __init__(self, user_id: str, token_digest: bytes = b"t") -> None:
        self.user_id = user_id
        self.token_digest = token_digest
        self.heard_at = trio.current_time()
        self.delivered: list[tuple[int, dict[str, Any]]] = []
        self.notified: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any] | ChatError | None] = []
        self.ended: tuple[str, str] | None = None

    def deliver(self, seq: int, frame: Shared) -> None:
        self.delivered.append((seq, {"type": "msg", "inbox": seq, **frame.frame}))

    def notify(self, frame: Shared) -> None:
        self.notified.append(frame.frame)

    def reply(self, frame: dict[str, Any]) -> None:
        self.replies.append(frame)

    def finished(self, answer: dict[str, Any] | ChatError | None) -> None:
        self.answers.append(answer)

    def end(self, code: str, message: str) -> None:
        self.ended = (code, message)


class ElsewhereRouter:
    """Every channel is sequenced by another shard."""

    def home(self, user_id: str) -> Place:
        return Place(local=True)

    def sequencer(self, channel: str) -> Place:
        return Place(local=False, shard="s2", url="http://127.0.0.1:9")


class RecordingHook:
    """An OutboxHook that asks for one record per recipient of each message."""

    topic = "test"

    def records(
        self, channel: str, msg_id: int, sender: str, inbox: Mapping[str, int]
    ) -> Sequence[bytes]:
        return [f"{channel}:{msg_id}:{user}".encode() for user in sorted(inbox) if user != sender]


@asynccontextmanager
async def open_store(path: Path, *, sync: bool = True) -> AsyncIterator[Store]:
    """A real Store in ``path`` with its committer running until the block ends."""
    store = Store(str(path), sync=sync)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield store
        finally:
            store.close()


async def until(predicate: Any) -> None:
    """Wait (at most 5 s) for the committer's hooks to make ``predicate()`` true. The hooks run
    after a commit in another thread, with nothing to wait on but the recorded state."""
    with trio.fail_after(5):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.001)
