"""Sends that need another shard first: the domain's ``Remote`` port.

``forward``: the channel is sequenced elsewhere. The send goes to that shard's peer listener
(``POST /peer/send``), which commits it (the ack means "stored on the sequencer") and answers
with the record for this shard; applying it here gives the sender its inbox entry, and then
the device its ack. A duplicate ref answers without a record: the ack follows when the
sequencer's record arrives through Redis. ``resolve``: the 1:1 recipient is homed elsewhere and
not known here yet; one peer call finds out whether the account exists.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import trio

from chatd.cluster import wire
from chatd.cluster.applier import Applier
from chatd.cluster.peer import USER_HEADER, PeerDown, Peers
from chatd.domain import errors
from chatd.domain.errors import ChatError, NotFound, Unavailable
from chatd.domain.ports import DeviceSink, Place
from chatd.net.errormap import error_frame

log = logging.getLogger("chatd.cluster")
FORWARD_BATCH = 256  # sends per peer call
CODES: dict[str, type[ChatError]] = {
    cls.code: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, ChatError) and cls is not ChatError
}


def error_from(code: str, message: str, ref: str = "") -> ChatError:
    """The domain error a peer answered with (``unavailable`` for codes unknown here)."""
    exc = CODES.get(code, Unavailable)(message)
    exc.ref = ref or None
    return exc


class Forwarding:
    def __init__(
        self,
        peers: Peers,
        applier: Applier,
        home: Callable[[str], Place],
        nursery: trio.Nursery,
        *,
        timeout: float = 10.0,
        known_max: int = 100_000,
    ) -> None:
        self.peers = peers
        self.applier = applier
        self.home = home
        self.nursery = nursery
        self.timeout = timeout
        self.known: OrderedDict[str, None] = OrderedDict()  # users homed elsewhere that exist
        self.known_max = known_max
        #: whether an account is stored here, set by the composition root
        self.account: Callable[[str], bool] = lambda user_id: False
        #: sends waiting to be forwarded, by sequencer shard, and the shards being drained
        self.queues: dict[str, list[tuple[DeviceSink, str, str, str]]] = {}
        self.draining: set[str] = set()
        #: ``Messenger.send``, set by the composition root once the messenger exists
        self.send_again: Callable[..., None] | None = None

    def knows(self, user_id: str) -> bool:
        return user_id in self.known

    def learn(self, user_id: str) -> None:
        self.known[user_id] = None
        if len(self.known) > self.known_max:
            self.known.popitem(last=False)

    async def exists(self, user_id: str) -> bool:
        """Whether ``user_id`` has an account (asking its home shard if need be)."""
        if self.knows(user_id):
            return True
        if self.home(user_id).local:
            return self.account(user_id)
        try:
            response = await self.peers.request(
                self.home(user_id).shard, "GET", f"/peer/exists/{user_id}"
            )
        except PeerDown as exc:
            raise Unavailable(str(exc), retry_after=1.0) from None
        if response.status == 200:
            self.learn(user_id)
            return True
        if response.status == 404:
            return False
        raise Unavailable(f"home shard of {user_id} answered {response.status}")

    def resolve(self, device: DeviceSink, ref: str, body: str, to: str) -> None:
        self.nursery.start_soon(self._resolve, device, ref, body, to)

    async def _resolve(self, device: DeviceSink, ref: str, body: str, to: str) -> None:
        try:
            if not await self.exists(to):
                raise NotFound(f"no user {to!r}", ref=ref)
            assert self.send_again is not None
            self.send_again(device, ref, body, to=to)
        except ChatError as exc:
            exc.ref = ref
            device.finished(exc)

    def forward(self, device: DeviceSink, ref: str, channel: str, body: str, to: Place) -> None:
        """Queue the send for ``to``; one task per shard drains its queue in batches, so a
        busy shard pair pays one peer call per batch, not per message."""
        if (device.user_id, ref) in self.applier.waiting:  # the same ref is on its way already
            device.finished(Unavailable("this ref is being sent", ref=ref, retry_after=1.0))
            return
        self.applier.expect(device.user_id, ref, device)
        self.queues.setdefault(to.shard, []).append((device, ref, channel, body))
        if to.shard not in self.draining:
            self.draining.add(to.shard)
            self.nursery.start_soon(self._drain, to.shard)

    async def _drain(self, shard: str) -> None:
        queue = self.queues[shard]
        try:
            while queue:
                batch = queue[:FORWARD_BATCH]
                del queue[:FORWARD_BATCH]
                await self._forward(shard, batch)
        finally:
            self.draining.discard(shard)

    async def _forward(self, shard: str, batch: list[tuple[DeviceSink, str, str, str]]) -> None:
        """One ``POST /peer/send`` for ``batch``: the sequencer commits each send (in order)
        and answers each with its ack and this shard's record, or an error. Applying the
        records here gives each sender its inbox entry; its device then gets the ack."""
        sends = [
            {"sender": d.user_id, "ref": ref, "channel": c, "body": b} for d, ref, c, b in batch
        ]
        try:
            response = await self.peers.request(
                shard, "POST", "/peer/send", body=wire.pack({"sends": sends})
            )
            answer = wire.unpack(response.body) if response.body else {}
            if response.status != 200:
                raise error_from(answer.get("error", ""), answer.get("message", ""))
        except (ChatError, PeerDown) as exc:
            for device, ref, _, _ in batch:
                self._fail(device, ref, exc)
            return
        records = []
        for (device, ref, _, _), result in zip(batch, answer["results"], strict=True):
            if "error" in result:
                error = error_from(result["error"], result.get("message", ""), ref)
                error.retry_after = result.get("retry_after")
                self._fail(device, ref, error)
            elif result.get("record"):
                records.append(result["record"])
        if records:
            await self.applier.offer(records)
        late = [(d, ref) for d, ref, _, _ in batch if (d.user_id, ref) in self.applier.waiting]
        if late:  # duplicates: their record comes through Redis
            self.nursery.start_soon(self._wait_late, late)

    async def _wait_late(self, late: list[tuple[DeviceSink, str]]) -> None:
        await trio.sleep(self.timeout)
        for device, ref in late:
            self._fail(device, ref, Unavailable("stored, not applied here yet: send again"))

    def _fail(self, device: DeviceSink, ref: str, exc: Exception) -> None:
        """Answer a forwarded send with an error, unless its ack went out meanwhile."""
        if self.applier.give_up(device.user_id, ref) is None:
            return
        if isinstance(exc, ChatError):
            exc.ref = ref
            device.finished(exc)
        else:
            device.finished(Unavailable(str(exc), ref=ref, retry_after=1.0))

    def history(
        self, device: DeviceSink, ref: str, channel: str, args: dict[str, Any], to: Place
    ) -> None:
        self.nursery.start_soon(self._history, device, ref, channel, args, to)

    async def _history(
        self, device: DeviceSink, ref: str, channel: str, args: dict[str, Any], to: Place
    ) -> None:
        query = urlencode({k: v for k, v in args.items() if v is not None})
        path = f"/v1/channels/{quote(channel, safe=':')}/messages" + (f"?{query}" if query else "")
        try:
            answer = await self.peers.request(
                to.shard, "GET", path, headers={USER_HEADER: device.user_id}
            )
            body = answer.json() if answer.body else {}
            if answer.status != 200:
                raise error_from(body.get("error", ""), body.get("message", ""), ref)
            device.reply({"type": "history", "ref": ref, "channel": channel, **body})
        except ChatError as exc:
            exc.ref = ref
            device.reply(error_frame(exc))
        except PeerDown as exc:
            device.reply(error_frame(Unavailable(str(exc), ref=ref, retry_after=1.0)))
