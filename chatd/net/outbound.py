"""The writing half of a connection: frames straight to the socket, a bounded buffer, a flusher.

There is no writer task while a connection keeps up: frames for it are written straight to the
socket by whichever task produced them (its own reader, or a commit hook fanning a message out).
While the reader handles one ``recv`` the connection is *corked*: replies are gathered and
written with one ``send``. Only when the kernel buffer is full does a flusher task wait for
writability; bytes wait in a buffer bounded by ``out_cap`` (``limits.outbound_queue_bytes``), and
a device that lets it overflow is closed with 1008 (it resyncs with ``since``). A device whose
socket takes nothing for ``write_stall`` seconds (``limits.write_stall_timeout``: it stopped
reading, but its queue fills too slowly to overflow) is closed with 1008 too. The sender and
other devices never wait for a slow one.

Frames shared by many devices (:class:`~chatd.domain.ports.Shared`) are encoded once per
subprotocol and the same bytes go to every device.

Writes to many connections made in one synchronous burst (the commit hooks of one group-commit
batch: acks and fan-out) are *gathered* (:class:`Gather`): each connection sends what the burst
gave it with one ``send`` at the end of the burst, not one per frame. A 100-member group at
1,000 msgs/s is ~99,000 frames/s; with batches of n messages each device takes its n frames in
one system call (bench/README.md, "Issue 18 on a quiet machine").
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import trio

from chatd.config import OUTBOUND_MIN
from chatd.domain.ports import Shared
from chatd.protocol import frames

#: The close reason (1008) of a device closed for an outbound queue over ``out_cap``.
OVERFLOW_REASON = "outbound queue overflow"
#: The close reason (1008) of a device whose socket took nothing for ``write_stall`` seconds.
STALL_REASON = "write stall"
#: Bytes a corked or gathered connection holds before it sends anyway: held bytes count
#: against ``out_cap`` only once the socket has refused them.
CORK_MAX = OUTBOUND_MIN


class Gather:
    """While open (``with gather:``, re-entrant), a connection's first write is held instead of
    sent, later ones join it, and on the way out of the outermost ``with`` every held
    connection sends its bytes with one ``send``, in the order the connections were first
    written to. Only synchronous code runs inside (nothing awaits), so a held connection's
    frames keep their order, and no frame waits longer than the burst it belongs to."""

    __slots__ = ("depth", "held")

    def __init__(self) -> None:
        self.depth = 0
        self.held: list[Outbound] = []

    def __enter__(self) -> Gather:
        self.depth += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.depth -= 1
        if self.depth == 0 and self.held:
            held, self.held = self.held, []
            for conn in held:
                conn._uncork()


class Outbound:
    """Output state of one connection. Subclasses provide ``closing``, :meth:`close`,
    :meth:`_crashed`, :attr:`out_cap`, :attr:`write_stall` and :meth:`spawn_flusher`."""

    __slots__ = (
        "sock",
        "binary",
        "gather",
        "out",
        "out_bytes",
        "corked",
        "flushing",
        "drained",
        "dead",
    )

    closing: bool

    def __init__(self, sock: socket.socket, binary: bool, gather: Gather | None = None) -> None:
        self.sock = sock
        self.binary = binary  # msgpack frames (else JSON)
        self.gather = gather  # writes made while it is open are sent when it closes
        self.out: list[bytes] | None = None  # pending output, allocated only when needed
        self.out_bytes = 0
        self.corked = False
        self.flushing = False
        self.drained: trio.Event | None = None
        self.dead = False  # the peer is gone: writes are dropped

    # -- what the connection provides
    @property
    def out_cap(self) -> int:
        raise NotImplementedError

    @property
    def write_stall(self) -> float:
        """Seconds the socket may stay unwritable, with bytes waiting, before a 1008 close."""
        raise NotImplementedError

    def close(self, code: int, reason: str = "") -> None:
        raise NotImplementedError

    def _crashed(self) -> None:
        raise NotImplementedError

    def spawn_flusher(self) -> None:
        """Run :meth:`_flusher` in a task that outlives the current one."""
        raise NotImplementedError

    # -- frames
    def reply(self, frame: dict[str, Any]) -> None:
        """A frame for this device alone (an answer, a snapshot, an error)."""
        self._write(frames.encode(frame, self.binary))

    def notify(self, frame: Shared) -> None:
        """A frame shared with other devices (encoded once per subprotocol)."""
        if not self.closing:
            self._write(self._encoded(frame))

    def _encoded(self, shared: Shared) -> bytes:
        return self._per_protocol(shared, frames.encode)  # type: ignore[no-any-return]

    def _encoded_msg(self, fields: Shared, seq: int) -> bytes:
        """The ``msg`` frame of inbox ``seq`` for a message whose fields are shared by every
        recipient: the fields are encoded once per subprotocol, the seq spliced in."""
        parts = self._per_protocol(fields, frames.msg_parts)
        return frames.encode_msg(parts, seq, self.binary)

    def _per_protocol(self, shared: Shared, build: Callable[[Any, bool], Any]) -> Any:
        """``build(shared.frame, binary)`` for this connection's subprotocol, made once per
        subprotocol and kept on ``shared`` for every other recipient."""
        cache = shared.cache
        if cache is None:
            cache = shared.cache = {}
        made = cache.get(self.binary)
        if made is None:
            made = cache[self.binary] = build(shared.frame, self.binary)
        return made

    def _write(self, data: bytes) -> None:
        if self.dead:
            return
        if self.corked or self.out is not None:
            if self.out is None:
                self.out = []
            self.out.append(data)
            self.out_bytes += len(data)
            if self.out_bytes > CORK_MAX:  # out_cap is at least CORK_MAX (chatd/config.py)
                if self.corked and not self.flushing:
                    self._uncork()  # a long burst: the socket takes what it can now
                    return
                if self.out_bytes > self.out_cap and not self.closing:
                    self.close(1008, OVERFLOW_REASON)
                    return
            if not self.corked and not self.flushing:
                self._start_flusher()
            return
        gather = self.gather
        if gather is not None and gather.depth:
            self.corked = True  # uncorked by the gather's end
            self.out, self.out_bytes = [data], len(data)
            gather.held.append(self)
            return
        self._send_now(data)

    def _uncork(self) -> None:
        self.corked = False
        if self.out is not None and not self.flushing:
            data = b"".join(self.out)
            self.out, self.out_bytes = None, 0
            self._send_now(data)

    def _send_now(self, data: bytes) -> None:
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.dead = True
            self.close(1006)
            return
        if sent < len(data):
            self.out = [data[sent:]]
            self.out_bytes = len(data) - sent
            self._start_flusher()

    def _start_flusher(self) -> None:
        self.flushing = True
        self.drained = trio.Event()
        self.spawn_flusher()

    async def _flusher(self) -> None:
        try:
            await self._drain()
        except (OSError, trio.ClosedResourceError):
            self.dead = True
            self.close(1006)
        except Exception:  # a bug: this task runs in the shared nursery, which must not see it
            self._crashed()
        finally:
            self.flushing = False
            if self.drained is not None:
                self.drained.set()

    async def _drain(self) -> None:
        while self.out is not None and not self.dead:
            # Each wait is bounded: a socket that takes no byte for ``write_stall`` seconds
            # belongs to a reader that stopped (its queue may fill too slowly to overflow).
            with trio.move_on_after(self.write_stall) as waited:
                await trio.lowlevel.wait_writable(self.sock)
            if waited.cancelled_caught:
                if not self.closing:
                    self.close(1008, STALL_REASON)
                return
            data = b"".join(self.out)
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                self.out, self.out_bytes = [data[sent:]], len(data) - sent
            else:
                self.out, self.out_bytes = None, 0

    async def _wait_drained(self) -> None:
        """Return once the output buffer is empty (or the peer is gone)."""
        while self.out is not None and not self.dead:
            if self.flushing:
                assert self.drained is not None
                await self.drained.wait()
            else:
                self.flushing = True
                try:
                    await self._drain()
                finally:
                    self.flushing = False
