"""Harness: the session state machine (``chatd/protocol/session.py``), pure and sans-IO.

The fuzz bytes (through ``atheris.FuzzedDataProvider``) become a sequence of what happens to one
device: client frames of every type (hello with and without ``since``), commits to its inbox
(whose live delivery hook runs later, in commit order), replay steps, answers to sends and
reads, disconnects, and, now and then, a call the shell should never make.

The harness plays the IO shell the way ``chatd/net/websocket.py`` does and checks:

- only ``ProtocolError`` (the peer's fault) and ``SessionError`` (a shell bug, here only for
  the deliberate misuses) are raised; ``SessionError`` exactly when :data:`TRANSITIONS` (or a
  documented check) refuses the call, and the session is CLOSED after it;
- every state change is the one :data:`TRANSITIONS` lists; CLOSED is for good;
- nothing is written before the hello is accepted (the ``welcome`` is first), nothing after
  CLOSED;
- while the shell follows the protocol, the device gets every inbox seq after its cursor
  exactly once, in increasing order with no gap, and ``synced.head`` is the last one replayed;
- ``last_seq`` never goes down; ``inflight`` counts what was started and not finished,
  ``paused`` and ``finished()`` agree with ``max_inflight``.
"""

from __future__ import annotations

from collections import deque
from itertools import pairwise

import atheris

from chatd.protocol import frames
from chatd.protocol.errors import ProtocolError, SessionError
from chatd.protocol.session import TRANSITIONS, Input, Session, State

MAX_LEN = 512
MAX_STEPS = 200
CLIENT_FRAMES = 7  # hello, hello since, send, history, read, typing, ping


class Shell:
    """The model of chatd/net/websocket.py around one Session, with the expected outcome."""

    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.fdp = fdp
        self.session = Session(fdp.ConsumeIntInRange(1, 8))
        self.head = fdp.ConsumeIntInRange(0, 5)  # the inbox's head seq
        self.hooks: deque[int] = deque()  # committed seqs whose live delivery has not run
        self.inflight = 0
        self.written: list[int] = []  # inbox seqs written to the device, in order
        self.welcomed = False
        self.cursor: int | None = None  # a replay under way reads after this seq
        self.lawful = True  # no deliberate misuse yet: the exactly-once checks hold
        self.start_seq = 0  # the device's cursor at the welcome: seqs after it are owed

    # -- one step
    def step(self) -> None:
        before = self.session.state
        last_seq = self.session.last_seq
        op = self.fdp.ConsumeIntInRange(0, 9)
        if op <= 2:
            self.client_frame()
        elif op == 3:
            self.commit()
        elif op == 4:
            self.hook()
        elif op == 5:
            self.replay_step()
        elif op == 6:
            self.answer()
        elif op == 7:
            self.expect(Input.CLOSE, self.session.close)
        elif op == 8:
            self.drain_hooks()
        else:
            self.misuse()
        self.check(before, last_seq)

    def client_frame(self) -> None:
        kind = self.fdp.ConsumeIntInRange(0, CLIENT_FRAMES - 1)
        frame = self.frame(kind)
        state = self.session.state
        if state is State.CLOSED:  # the shell stops reading once closed: a misuse
            self.lawful = False
        try:
            self.session.check(frame)
        except ProtocolError as exc:
            assert state is not State.CLOSED, "check() answered ProtocolError when CLOSED"
            if state is State.AWAIT_HELLO:
                assert exc.code == "unauthorized" and not isinstance(frame, frames.Hello)
                assert self.session.state is State.CLOSED
            else:
                assert isinstance(frame, frames.Hello) and exc.code == "bad_request"
                assert self.session.state is state
            return
        except SessionError:
            assert state is State.CLOSED and self.session.state is State.CLOSED
            return
        assert state is not State.CLOSED, "check() let a frame through when CLOSED"
        assert (state is State.AWAIT_HELLO) == isinstance(frame, frames.Hello), (state, frame)
        if isinstance(frame, frames.Hello):
            self.accept(frame)
        elif isinstance(frame, frames.Send | frames.Read):
            self.session.started()
            self.inflight += 1

    def frame(self, kind: int) -> frames.ClientFrame:
        seq = self.fdp.ConsumeIntInRange(0, 12)
        if kind == 0:
            return frames.Hello("alice.token", None)
        if kind == 1:
            return frames.Hello("alice.token", seq)
        if kind == 2:
            return frames.Send("r", "bob", None, "hi")
        if kind == 3:
            return frames.History("h", "dm:alice:bob", seq or None, None)
        if kind == 4:
            return frames.Read("dm:alice:bob", seq)
        if kind == 5:
            return frames.Typing("dm:alice:bob")
        return frames.Ping()

    def accept(self, hello: frames.Hello) -> None:
        welcome = self.session.accept_hello(
            hello, user_id="alice", device_id="d1", inbox_head=self.head
        )
        assert welcome.frame == frames.welcome_frame("alice", "d1", self.head), welcome
        assert not self.welcomed and not self.written
        self.welcomed = True
        if hello.since is None:
            assert welcome.replay_from is None and self.session.state is State.LIVE
            assert self.session.last_seq == self.head
        else:
            assert welcome.replay_from == min(hello.since, self.head), welcome
            assert self.session.state is State.SYNCING
            self.cursor = welcome.replay_from
        self.start_seq = self.session.last_seq
        # Hooks of commits the hello's read of the head already saw may still run.

    def commit(self) -> None:
        self.head += 1
        self.hooks.append(self.head)

    def hook(self) -> None:
        """The oldest pending commit's live delivery runs (hooks run in commit order)."""
        if self.hooks:
            self.offer(self.hooks.popleft())

    def drain_hooks(self) -> None:
        while self.hooks:
            self.offer(self.hooks.popleft())

    def offer(self, seq: int) -> None:
        state, last = self.session.state, self.session.last_seq
        if state is State.AWAIT_HELLO:
            return  # not in the session table yet: the domain does not know the device
        write = self.session.offer(seq)
        assert write == (state is State.LIVE and seq > last), (state, seq, last, write)
        if write:
            self.written.append(seq)
            assert self.session.last_seq == seq

    def replay_step(self) -> None:
        """The replay reads the next entry after its cursor, or finds none and goes live."""
        if self.cursor is None or self.session.state is not State.SYNCING:
            return
        if self.cursor < self.head:
            self.cursor += 1
            seq = self.cursor
            # After a misuse (a replayed seq out of order) the shell's cursor may be behind.
            behind = seq <= self.session.last_seq
            assert not (behind and self.lawful), (seq, self.session)
            self.expect(Input.REPLAYED, lambda: self.session.replayed(seq), refused=behind)
            if not behind:
                self.written.append(seq)
            return
        last = self.session.last_seq
        synced = self.session.synced()
        assert synced == frames.synced_frame(last), (synced, last)
        if self.lawful:  # the last seq replayed, or where the replay started
            assert last == (self.written[-1] if self.written else self.start_seq), synced
        assert self.session.state is State.LIVE
        self.cursor = None

    def answer(self) -> None:
        """The committer answers one send or read in flight."""
        if not self.inflight:
            return
        if self.session.state is State.AWAIT_HELLO:
            raise AssertionError("a request in flight before the hello")
        resume = self.session.finished()
        self.inflight -= 1
        assert resume == (2 * self.inflight < self.session.max_inflight)

    def misuse(self) -> None:
        """A call the shell should not make now (or may): SessionError iff the table says so."""
        self.lawful = False
        which = self.fdp.ConsumeIntInRange(0, 5)
        seq = self.fdp.ConsumeIntInRange(0, 20)
        session = self.session
        if which == 0:
            hello = frames.Hello("x", seq if seq % 2 else None)
            event = Input.HELLO if hello.since is None else Input.HELLO_SINCE
            self.expect(
                event,
                lambda: session.accept_hello(hello, user_id="x", device_id="y", inbox_head=seq),
            )
            if session.authenticated:  # a hello accepted without check(): welcome written
                self.welcomed = True
        elif which == 1:
            extra = session.state is not State.CLOSED and seq <= session.last_seq
            self.expect(Input.REPLAYED, lambda: session.replayed(seq), refused=extra)
        elif which == 2:
            self.expect(Input.SYNCED, session.synced)
        elif which == 3:
            self.expect(Input.STARTED, session.started)
            if session.state is not State.CLOSED or (State.CLOSED, Input.STARTED) in TRANSITIONS:
                self.inflight = session.inflight
        elif which == 4:
            legal = (session.state, Input.FINISHED) in TRANSITIONS
            self.expect(Input.FINISHED, session.finished, refused=legal and not session.inflight)
            self.inflight = session.inflight
        else:
            self.expect(Input.OFFER, lambda: session.offer(seq))

    def expect(self, event: Input, call: object, *, refused: bool = False) -> None:
        """Make a call standing for ``event``: SessionError iff the table (or a documented
        extra check) refuses it, and then CLOSED."""
        state = self.session.state
        nxt = TRANSITIONS.get((state, event))
        try:
            call()  # type: ignore[operator]
        except SessionError:
            assert nxt is None or refused, (state, event)
            assert self.session.state is State.CLOSED
            return
        assert nxt is not None and not refused, (state, event, "was allowed")
        assert self.session.state is nxt, (state, event, self.session.state, nxt)

    # -- after every step
    def check(self, before: State, last_seq: int) -> None:
        s = self.session
        if before is State.CLOSED:
            assert s.state is State.CLOSED, "left CLOSED"
        assert s.authenticated == (s.state in (State.SYNCING, State.LIVE))
        assert s.last_seq >= last_seq, (last_seq, s.last_seq)
        assert s.inflight >= 0 and s.inflight == self.inflight, (s.inflight, self.inflight)
        assert s.paused == (s.inflight >= s.max_inflight)
        if self.written:
            assert self.welcomed, "wrote an entry before the welcome"
        assert all(a < b for a, b in pairwise(self.written)), self.written
        if self.lawful and self.written:
            # Exactly once, no gap: what the device was sent follows on from its cursor.
            owed = list(range(self.start_seq + 1, self.written[-1] + 1))
            assert self.written == owed, (self.start_seq, self.written)


def TestOneInput(data: bytes) -> None:  # noqa: N802 (libFuzzer's name)
    fdp = atheris.FuzzedDataProvider(data)
    shell = Shell(fdp)
    for _ in range(MAX_STEPS):
        if not fdp.remaining_bytes():
            break
        shell.step()
    if shell.lawful and shell.session.state is State.LIVE:
        # Every commit's hook eventually runs: a live device ends with everything owed.
        shell.drain_hooks()
        assert shell.written[-1:] in ([], [shell.head]), (shell.written, shell.head)
        assert shell.session.last_seq == shell.head
