"""The per-device session state machine: pure, no sockets, no clock, no trio.

Theory of operation (in the manner of ``h11/_state.py``). A WebSocket device goes through

    AWAIT_HELLO --HELLO-------> LIVE                          (hello without ``since``)
    AWAIT_HELLO --HELLO_SINCE-> SYNCING --SYNCED--> LIVE      (hello with ``since``)
    any state   --CLOSE-------> CLOSED                        (for any reason; for good)

The IO shell (``chatd/net/websocket.py``) tells the session what happened, one :class:`Input`
per method call, and the session answers what to do. :data:`TRANSITIONS` lists every legal
``(state, input)`` pair with the state it leads to; inputs that do not change the state (a
client frame, a replayed entry, a live offer, a request starting or finishing) are listed as
self-loops, so the table says exactly where each call is allowed. Anything missing is a bug in
the shell: it raises :class:`SessionError` and the session is CLOSED for good, so a misuse
cannot go on silently.

The peer's mistakes are :class:`ProtocolError`\\ s (the frame is answered with an ``error``
frame): anything but ``hello`` before the hello, which is fatal (CLOSED: the shell closes the
connection, 4001), and a second ``hello`` after it, which is not.

The sync rules that make delivery exactly-once (docs/protocol.md "Sync") live here and nowhere
else. ``last_seq`` is the highest inbox seq the device has been sent or already had:

- hello without ``since``: ``last_seq`` is the inbox head read for the ``welcome``.
- hello with ``since``: ``last_seq`` starts at ``since`` (at the welcome's inbox head if
  ``since`` is past it: see :meth:`Session.accept_hello`). While SYNCING, live deliveries are
  refused (:meth:`Session.offer` is False): they are committed, so the replay reads them.
  :meth:`Session.replayed` records each entry the replay wrote, in ascending order.
  :meth:`Session.synced` goes live with ``synced.head`` = ``last_seq``: the last seq actually
  replayed (or where the replay started), never a head read separately, which could name a
  seq no one sent.
  The shell calls it in the same event-loop step as the replay's read that came back empty, so
  a commit after that read is delivered live.
- LIVE: a delivery is written only if its seq is above ``last_seq``, which then moves to it, so
  a commit the replay already read is dropped and each seq reaches the device at most once, in
  increasing order.

Flow control is counted here too: each accepted ``send`` or ``read`` is in flight from
:meth:`Session.started` until :meth:`Session.finished` (its answer). At ``max_inflight`` the
session is :attr:`~Session.paused` (the shell stops reading the socket, so a fast sender fills
its own TCP window); :meth:`Session.finished` says when reading may resume (below half).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from chatd.protocol.errors import ProtocolError, SessionError
from chatd.protocol.frames import ClientFrame, Hello, synced_frame, welcome_frame

__all__ = ["TRANSITIONS", "Input", "Session", "SessionError", "State", "Welcome"]


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    SYNCING = "syncing"
    LIVE = "live"
    CLOSED = "closed"

    # Members are singletons compared by identity, so hashing by identity is equivalent, and
    # it is C code: ``Enum.__hash__`` is Python (``hash(self._name_)``), and the table lookup
    # of every move hashed two members through it (four moves per send).
    __hash__ = object.__hash__


class Input(enum.Enum):
    FRAME = "frame"  # a client frame arrived (check)
    HELLO = "hello"  # the hello was accepted (authenticated, under the session cap)
    HELLO_SINCE = "hello_since"  # the same, with a ``since`` cursor: a replay follows
    REPLAYED = "replayed"  # the replay wrote one inbox entry
    SYNCED = "synced"  # the replay's last read came back empty: go live
    OFFER = "offer"  # a live ``msg`` for the device's inbox
    STARTED = "started"  # a send or read was accepted: in flight
    FINISHED = "finished"  # one in flight was answered
    CLOSE = "close"  # the connection is closing, for any reason

    __hash__ = object.__hash__  # identity, in C: see State


_S, _I = State, Input

#: (state, input) -> next state. Anything missing is illegal (SessionError, then CLOSED).
TRANSITIONS: Final[dict[tuple[State, Input], State]] = {
    (_S.AWAIT_HELLO, _I.FRAME): _S.AWAIT_HELLO,
    (_S.AWAIT_HELLO, _I.HELLO): _S.LIVE,
    (_S.AWAIT_HELLO, _I.HELLO_SINCE): _S.SYNCING,
    (_S.AWAIT_HELLO, _I.CLOSE): _S.CLOSED,
    (_S.SYNCING, _I.FRAME): _S.SYNCING,  # frames pipelined behind the hello
    (_S.SYNCING, _I.REPLAYED): _S.SYNCING,
    (_S.SYNCING, _I.SYNCED): _S.LIVE,
    (_S.SYNCING, _I.OFFER): _S.SYNCING,  # refused: the replay reads it
    (_S.SYNCING, _I.STARTED): _S.SYNCING,
    (_S.SYNCING, _I.FINISHED): _S.SYNCING,
    (_S.SYNCING, _I.CLOSE): _S.CLOSED,
    (_S.LIVE, _I.FRAME): _S.LIVE,
    (_S.LIVE, _I.OFFER): _S.LIVE,
    (_S.LIVE, _I.STARTED): _S.LIVE,
    (_S.LIVE, _I.FINISHED): _S.LIVE,
    (_S.LIVE, _I.CLOSE): _S.CLOSED,
    # Work under way when the connection closed may still report: a commit hook delivering
    # to or answering a closed device, a replay chunk being written. All of it is dropped.
    (_S.CLOSED, _I.REPLAYED): _S.CLOSED,
    (_S.CLOSED, _I.OFFER): _S.CLOSED,
    (_S.CLOSED, _I.FINISHED): _S.CLOSED,
    (_S.CLOSED, _I.CLOSE): _S.CLOSED,
}

#: The inputs a LIVE session takes without changing state. The per-message calls (``check``,
#: ``started``, ``finished``, ``offer``) skip the table lookup in LIVE, the state of nearly all
#: traffic; these self-loops are what makes that skip the same as the lookup.
_LIVE_LOOPS: Final = (_I.FRAME, _I.OFFER, _I.STARTED, _I.FINISHED)
assert all(TRANSITIONS[(_S.LIVE, i)] is _S.LIVE for i in _LIVE_LOOPS)
_LIVE: Final = _S.LIVE


@dataclass(frozen=True, slots=True)
class Welcome:
    """What an accepted hello turns into: the ``welcome`` frame to send, and the cursor a
    replay starts from (None: no replay, the device is live at once)."""

    frame: dict[str, Any]
    replay_from: int | None


class Session:
    """One device's protocol state: a handful of slots, allocated per connection."""

    __slots__ = ("state", "user_id", "device_id", "last_seq", "inflight", "max_inflight")

    def __init__(self, max_inflight: int = 256) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, not {max_inflight}")
        self.state = State.AWAIT_HELLO
        self.user_id = ""
        self.device_id = ""
        #: the highest inbox seq this device has been sent (replayed or live) or already had
        self.last_seq = 0
        #: accepted sends and reads not answered yet
        self.inflight = 0
        self.max_inflight = max_inflight

    def __repr__(self) -> str:
        return (
            f"<Session {self.state.value} user={self.user_id or '-'} "
            f"device={self.device_id or '-'} last_seq={self.last_seq} inflight={self.inflight}>"
        )

    def _move(self, event: Input) -> None:
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            self._fail(f"{event.value} is not allowed in state {self.state.value}")
        self.state = nxt

    def _fail(self, message: str) -> NoReturn:
        """The shell misused the session: CLOSED for good, and SessionError."""
        self.state = State.CLOSED
        raise SessionError(message)

    # -- the peer's frames
    def check(self, frame: ClientFrame) -> None:
        """Is ``frame`` allowed now? :class:`ProtocolError` (the peer's fault) if not.

        Before the hello only ``hello`` is, and anything else ends the session (CLOSED,
        ``unauthorized``); after it, anything but ``hello`` (a second one is ``bad_request``
        and the session goes on).
        """
        if self.state is _LIVE:  # a self-loop (see _LIVE_LOOPS)
            if isinstance(frame, Hello):
                raise ProtocolError("already authenticated")
            return
        self._move(Input.FRAME)
        if self.state is State.AWAIT_HELLO:
            if not isinstance(frame, Hello):
                self.state = State.CLOSED
                raise ProtocolError("the first frame must be hello", code="unauthorized")
        elif isinstance(frame, Hello):
            raise ProtocolError("already authenticated")

    def accept_hello(
        self, hello: Hello, *, user_id: str, device_id: str, inbox_head: int
    ) -> Welcome:
        """The hello authenticated as ``user_id``; ``inbox_head`` is the inbox's head now.

        Without ``since`` the device is live at once from ``inbox_head``; with it, the shell
        replays the inbox after ``Welcome.replay_from`` (reporting each entry to
        :meth:`replayed`) and then calls :meth:`synced`.

        A ``since`` past ``inbox_head`` names entries this inbox never had (a client bug, or a
        server restored from an older backup): the replay then starts at ``inbox_head``, so the
        entries committed from now on are not taken for ones the device has, and
        ``synced.head`` below its ``since`` tells the device where the inbox really is.
        """
        self._move(Input.HELLO if hello.since is None else Input.HELLO_SINCE)
        self.user_id, self.device_id = user_id, device_id
        frame = welcome_frame(user_id, device_id, inbox_head)
        if hello.since is None:
            self.last_seq = inbox_head
            return Welcome(frame, None)
        self.last_seq = min(hello.since, inbox_head)
        return Welcome(frame, self.last_seq)

    # -- sync
    def replayed(self, seq: int) -> None:
        """The replay wrote inbox entry ``seq``; seqs come in ascending order."""
        self._move(Input.REPLAYED)
        if self.state is State.CLOSED:
            return
        if seq <= self.last_seq:
            self._fail(f"replayed seq {seq} is not above {self.last_seq}")
        self.last_seq = seq

    def synced(self) -> dict[str, Any]:
        """The replay's last read found nothing more: go live. Returns the ``synced`` frame,
        whose ``head`` is the last seq replayed (or ``replay_from`` if there was none)."""
        self._move(Input.SYNCED)
        return synced_frame(self.last_seq)

    def offer(self, seq: int) -> bool:
        """A live ``msg`` for inbox entry ``seq``: True if it must be written (``last_seq``
        moves to it); False while syncing, once closed, or if the device has it already."""
        if self.state is not _LIVE:  # in LIVE a self-loop (see _LIVE_LOOPS)
            self._move(Input.OFFER)
            return False  # SYNCING or CLOSED
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    def close(self) -> None:
        """The connection is closing (any number of times, from any state)."""
        self._move(Input.CLOSE)

    # -- flow control
    def started(self) -> None:
        """A send or read was accepted and is now in flight."""
        if self.state is not _LIVE:  # in LIVE a self-loop (see _LIVE_LOOPS)
            self._move(Input.STARTED)
        self.inflight += 1

    def finished(self) -> bool:
        """A request in flight was answered. True if reading may resume: fewer than half of
        ``max_inflight`` are still in flight."""
        if self.state is not _LIVE:  # in LIVE a self-loop (see _LIVE_LOOPS)
            self._move(Input.FINISHED)
        if self.inflight <= 0:
            self._fail("finished with nothing in flight")
        self.inflight -= 1
        return 2 * self.inflight < self.max_inflight

    @property
    def paused(self) -> bool:
        """``max_inflight`` requests are in flight: stop reading the peer until some are
        answered (:meth:`finished` says when)."""
        return self.inflight >= self.max_inflight

    @property
    def authenticated(self) -> bool:
        """The hello was accepted and the session is not closed."""
        return self.state is State.SYNCING or self.state is State.LIVE
