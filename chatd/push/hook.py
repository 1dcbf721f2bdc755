"""The push outbox hook: one job per subscription of each offline recipient, stored in the
message's own commit (topic ``push`` of the outbox), so a crash cannot lose a notification.

A job record is msgpack ``[user, subscription id, inbox seq, channel, msg_id, created ms]``.
Records name the message; the worker reads its sender, body and ts from storage when it sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import msgpack
import trio

from chatd.push.audience import Audience

TOPIC = "push"


@dataclass(frozen=True, slots=True)
class Job:
    """A stored push job (its outbox ``seq`` and the record's fields)."""

    seq: int
    user: str
    sub: str
    inbox: int
    channel: str
    msg_id: int
    created_ms: int


def encode(user: str, sub: str, inbox: int, channel: str, msg_id: int, created_ms: int) -> bytes:
    return msgpack.packb([user, sub, inbox, channel, msg_id, created_ms], use_bin_type=True)


def decode(seq: int, record: bytes) -> Job:
    user, sub, inbox, channel, msg_id, created_ms = msgpack.unpackb(record, raw=False)
    return Job(seq, user, sub, inbox, channel, msg_id, created_ms)


class PushHook:
    """The :class:`~chatd.domain.ports.OutboxHook` of push. ``records`` runs in the storage
    writer thread: it reads only the audience's published snapshot (an immutable map, see
    ``audience.py``) and tells the worker through the trio token, which is thread-safe."""

    topic = TOPIC

    def __init__(self, audience: Audience, wake: Callable[[], None]) -> None:
        self.audience = audience
        self._wake = wake
        self._token = trio.lowlevel.current_trio_token()

    def records(
        self, channel: str, msg_id: int, sender: str, inbox: Mapping[str, int]
    ) -> Sequence[bytes]:
        offline = self.audience.offline  # one read of the snapshot for the whole message
        out: list[bytes] = []
        created: int | None = None
        for user, seq in inbox.items():
            subs = offline.get(user)
            if not subs or user == sender:
                continue
            if created is None:
                created = int(time.time() * 1000)
            out.extend(encode(user, sub, seq, channel, msg_id, created) for sub in subs)
        if out:
            try:
                self._token.run_sync_soon(self._wake)  # runs on the loop, after this returns
            except trio.RunFinishedError:
                pass
        return out
