"""WebSocket connections: the per-connection IO shell (after chatd/net/handshake.py's 101).

Density is the design goal. An idle connection is a non-blocking socket parked in one epoll
set (``chatd/net/parking.py``: no task of its own), one :class:`Conn` with ``__slots__`` and its
session; it has a task only while it must wait (a replay, backpressure, its close), and its
deadlines are the heartbeat wheel's (``chatd/net/heartbeat.py``). Small whole frames are parsed
by :meth:`Conn._on_bytes`; a frame-level ``wsproto.connection.Connection`` is made only for
anything else (the HTTP handshake was done by h11 and dropped). Writing (no writer task while
the peer keeps up, a bounded buffer, a flusher only when the kernel's is full) is
``chatd/net/outbound.py``; messages that arrive in pieces are put together by
``chatd/net/reassembly.py``; the protocol state (hello, sync, in-flight count) is the pure
session machine of ``chatd/protocol/session.py``. Reads are processed in batches: replies
produced while handling one ``recv`` are written with one ``send``.

A connection is the domain's :class:`~chatd.domain.ports.DeviceSink`: the domain hands it
frames (``deliver``, ``notify``, ``reply``, ``finished``) and never sees a socket. Frames shared
by many devices (:class:`~chatd.domain.ports.Shared`) are encoded once per subprotocol and the
same bytes go to every device.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
import socket
from collections.abc import Callable
from typing import Any

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, Ping
from wsproto.utilities import RemoteProtocolError

from chatd.config import Config
from chatd.domain import validate
from chatd.domain.accounts import Accounts, now_ms, token_digest
from chatd.domain.errors import (
    BadRequest,
    ChatError,
    TooManySessions,
    Unavailable,
    WrongShard,
)
from chatd.domain.messaging import Messenger, inbox_frame
from chatd.domain.ports import Router, Shared
from chatd.domain.presence import Presence
from chatd.domain.receipts import Receipts
from chatd.domain.sessions import Sessions
from chatd.net import reassembly
from chatd.net import sockets as net
from chatd.net.errormap import CLOSE_CODE, close_code, error_frame
from chatd.net.heartbeat import Heartbeats
from chatd.net.lifecycle import Lifecycle
from chatd.net.outbound import Gather, Outbound
from chatd.net.parking import Parking
from chatd.protocol import frames
from chatd.protocol.errors import ProtocolError
from chatd.protocol.errors import error_frame as protocol_error_frame
from chatd.protocol.session import Session
from storage import StorageUnavailable, Store

log = logging.getLogger("chatd.ws")
REPLAY_CHUNK = 100
REPLAY_HIGH_WATER = 256 * 1024  # a replay waits for the socket before queueing more than this
CLOSE_FLUSH_TIMEOUT = 2.0
MAX_INFLIGHT = 256  # un-acked sends per connection before it stops reading

_device_prefix = secrets.token_hex(2)
_device_ids = itertools.count(1)


class Conn(Outbound):
    """One WebSocket connection (one device once authenticated). The writing half, with its
    bounded buffer and flusher, is :class:`~chatd.net.outbound.Outbound`.

    An idle connection has no task: it is *parked* (``chatd/net/parking.py``) and its bytes
    are handled by the parking's one task. It gets a task of its own (:meth:`_serve`) only
    while it must wait for something: a replay, acks under backpressure, its close. Its
    deadlines (the hello's, then the token's expiry) and its liveness are the heartbeat
    wheel's (``chatd/net/heartbeat.py``), so it holds no cancel scope while parked.
    """

    __slots__ = (
        "srv",
        "ws",
        "rest",
        "parked",
        "due",
        "token_digest",
        "scope",
        "closing",
        "close_code",
        "close_reason",
        "partial",
        "session",
        "replay_from",
        "heard_at",
        "timed_out",
        "acks_waiter",
        "wheel_slot",
        "peer",
    )

    #: frames one message may come in (close 1009 beyond); the test-only echo endpoint
    #: (chatd/net/echo.py) sets its own
    max_fragments: int = reassembly.MAX_FRAGMENTS
    #: whether the connection must say hello within ``server.hello_timeout`` (echo: no)
    awaits_hello: bool = True

    def __init__(
        self, srv: WsServer, sock: socket.socket, binary: bool, trailing: bytes, peer: str = ""
    ) -> None:
        super().__init__(sock, binary, srv.gather)
        self.srv = srv
        self.peer = peer  # the client's address (the HTTP connection's string), for logs
        #: wsproto, made only when a frame needs it (see _on_bytes): most never do
        self.ws: Connection | None = None
        #: the start of a frame that has not fully arrived (the fast path's buffer)
        self.rest = trailing
        self.parked = False
        #: the hard deadline (trio time): the hello's, then the token's expiry
        self.due = math.inf
        self.session = Session(MAX_INFLIGHT)  # the protocol state: chatd/protocol/session.py
        self.token_digest = b""
        self.scope: trio.CancelScope | None = None  # only while it has a task (_serve)
        self.closing = False
        self.close_code = 0
        self.close_reason = ""
        self.partial: reassembly.Partial | None = None  # a message still arriving in pieces
        self.replay_from: int | None = None  # set by hello's since: _serve replays
        self.heard_at = 0.0
        self.timed_out = False
        self.acks_waiter: trio.Event | None = None
        #: the heartbeat wheel slot this device waits in (chatd/net/heartbeat.py): O(1) removal
        self.wheel_slot: set[Conn] | None = None

    # -- lifecycle
    async def run(self) -> None:
        """The connection's first task: the bytes that came with the upgrade request (a
        pipelined hello), then :meth:`_serve` until it parks or closes."""
        srv = self.srv
        self.heard_at = now = trio.current_time()
        if self.awaits_hello:
            self.due = now + srv.config.server.hello_timeout
        srv.heartbeats.watch(self)
        try:
            if self.rest:
                data, self.rest = self.rest, b""
                self._on_bytes(data)
        except Exception:
            self._crashed()
        await self._serve()

    async def _serve(self) -> None:
        """A task of the connection's own: replay, wait out backpressure, then park; or, once
        it is closing, leave the session table and shut down.

        This is the connection's last-resort handler: an unexpected exception (a bug) anywhere
        in it, in its handling of bytes while parked, or in its flusher, is logged once with
        the peer address and closes this connection with 1011. It never reaches the shared
        nursery or the parking, so nothing else stops.
        """
        srv = self.srv
        try:
            with trio.CancelScope() as self.scope:
                while not self.closing and not self.dead:
                    if self.replay_from is not None:
                        await self._replay()
                    elif self.session.paused:
                        # Backpressure: stop reading until acks come back, so a fast sender
                        # fills its own TCP window instead of the commit queue.
                        self.acks_waiter = trio.Event()
                        await self.acks_waiter.wait()
                        self.acks_waiter = None
                    elif srv.parking.park(self):
                        self.scope = None
                        return
                    else:  # the parking is not running (yet, or any more): read here
                        await trio.lowlevel.wait_readable(self.sock)
                        if not self._on_readable():
                            self.dead = True
        except Exception:
            self._crashed()
        self.scope = None
        await self._finish()

    def on_parked(self) -> None:
        """The parking saw this socket readable: handle what came; a task if it must wait."""
        try:
            if not self._on_readable():
                self.dead = True
        except Exception:
            self._crashed()
        if self.parked and (
            self.closing or self.dead or self.replay_from is not None or self.session.paused
        ):
            self._wake()

    def _wake(self) -> None:
        """Something changed that the connection must act on (it is closing, replaying or
        paused): cancel the wait of its task, or give a parked one a task."""
        if self.scope is not None:
            self.scope.cancel()
        elif self.parked:
            self.srv.parking.unpark(self)
            self.srv.nursery.start_soon(self._serve)

    async def _finish(self) -> None:
        srv = self.srv
        try:
            srv.heartbeats.forget(self)
            if self.user_id:
                srv.sessions.remove(self)
                srv.presence.disconnected(self, timed_out=self.timed_out)
        except Exception:
            self._crashed()
        try:
            await self._shutdown()
        except Exception:
            self._crashed()
        finally:
            self._done()

    def abandon(self) -> None:
        """The parking is shutting down (cancelled) with this connection parked: close it
        now, no close frame, nothing awaited."""
        self.closing = True
        self.dead = True
        try:
            self.session.close()
            self.srv.heartbeats.forget(self)
            if self.user_id:
                self.srv.sessions.remove(self)
                self.srv.presence.disconnected(self, timed_out=self.timed_out)
        except Exception:
            self._crashed()
        finally:
            net.close(self.sock)
            self._done()

    def _done(self) -> None:
        srv = self.srv
        self._release()
        srv.lifecycle.websockets.discard(self)
        srv.lifecycle.connections.release(self.sock)
        srv.lifecycle.check_idle()

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- the heartbeat wheel's questions (chatd/net/heartbeat.py)
    def expiry(self, timeout: float) -> float:
        """When this connection is due to be closed unless heard from: its hard deadline, and
        ``timeout`` after it was last heard from once authenticated."""
        if self.session.user_id:
            return min(self.due, self.heard_at + timeout)
        return self.due

    def expire(self, now: float) -> None:
        """Its :meth:`expiry` passed: the hello or the token ran out, or it went silent."""
        if now < self.due:
            self.timed_out = True
            self.close(1008, "heartbeat timeout")
        elif self.user_id:
            self.end("unauthorized", "token expired")
        else:
            self.reply(error_frame(BadRequest("no hello within the deadline")))
            self.close(1008, "hello timeout")

    def _crashed(self) -> None:
        """Last resort, in an ``except`` block: log the bug (once per connection) with the peer
        address and close this connection with 1011."""
        if self.close_code != 1011:
            log.exception(
                "WebSocket connection from %s (%s) failed; closing it with 1011",
                self.peer or "unknown peer",
                self.user_id or "not authenticated",
            )
        self.session.close()
        self.closing = True
        self.close_code, self.close_reason = 1011, "internal error"
        self._wake()

    def _release(self) -> None:
        """Drop what an ended connection no longer needs (buffers, wsproto state), so whatever
        may still refer to this object (a pending commit's ack) holds only a few slots."""
        self.out, self.out_bytes, self.partial = None, 0, None
        self.drained = self.acks_waiter = None
        self.scope = None
        self.rest = b""
        del self.ws  # nothing reads it once the socket is closed

    @property
    def user_id(self) -> str:
        """The authenticated user ("" before hello)."""
        return self.session.user_id

    def close(self, code: int, reason: str = "") -> None:
        """Ask the connection to close with ``code``; safe from any task, any number of times."""
        self.session.close()
        if not self.closing:
            self.closing = True
            self.close_code, self.close_reason = code, reason
        self._wake()

    async def _shutdown(self) -> None:
        """Send the close frame (if any), flush briefly, half-close, drain the peer, close."""
        try:
            with trio.move_on_after(CLOSE_FLUSH_TIMEOUT):
                if self.close_code and not self.dead:
                    ws = self._proto()
                    if ws.state is ConnectionState.OPEN:
                        self.corked = False
                        self._write(ws.send(CloseConnection(self.close_code, self.close_reason)))
                await self._wait_drained()
                if not self.dead:
                    self.sock.shutdown(socket.SHUT_WR)
                    while await net.recv(self.sock):
                        pass
        except OSError:
            pass
        finally:
            self.dead = True
            net.close(self.sock)

    def _proto(self) -> Connection:
        """The connection's wsproto state, made on first use: from then on every byte read
        goes through it (see :meth:`_on_bytes`)."""
        ws = self.ws
        if ws is None:
            ws = self.ws = Connection(ConnectionType.SERVER)
            # wsproto queues events in a deque only for receive_data(None), which chatd never
            # calls (end of stream ends the read loop instead). An empty deque costs ~760
            # bytes; an empty tuple answers the same "while self._events" check.
            ws._events = ()  # type: ignore[assignment]
        return ws

    # -- reading
    def _on_readable(self) -> bool:
        """Handle everything one ``recv`` brings. False at EOF."""
        try:
            data = self.sock.recv(net.RECV_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self.heard_at = trio.current_time()  # liveness: one float, nothing else woken
        if self.ws is None:
            self._on_bytes(data)
        else:
            self.ws.receive_data(data)
            self._on_events(self.srv.max_frame)
        return True

    def _on_bytes(self, data: bytes) -> None:
        """The fast path: complete, unfragmented, masked text, binary and ping frames of at
        most ``fast_max`` bytes are parsed here, replies corked into one write.

        Anything else (a close, a pong, a fragment, a reserved bit, an over-long or
        non-minimal length, invalid UTF-8) hands the bytes from that frame on to wsproto,
        which then reads this connection for good: so every case wsproto refuses is refused
        by wsproto itself, with its close code and reason, and every frame taken here is one
        wsproto would have turned into the same event (no extensions are negotiated). A frame
        not fully arrived waits in ``rest`` (at most ``fast_max`` + 8 bytes).
        """
        if self.rest:
            data = self.rest + data
            self.rest = b""
        fast_max = self.srv.fast_max
        n = len(data)
        i = 0
        self.corked = True
        try:
            while i < n:
                if n - i < 2:
                    break
                b0 = data[i]
                b1 = data[i + 1]
                if b1 < 0x80 or (b0 != 0x82 and b0 != 0x81 and b0 != 0x89):
                    return self._to_wsproto(data[i:])
                size = b1 & 0x7F
                h = i + 2
                if size == 126:
                    if b0 == 0x89 or n - h < 2:
                        if b0 == 0x89:
                            return self._to_wsproto(data[i:])
                        break
                    size = (data[h] << 8) | data[h + 1]
                    if size < 126:
                        return self._to_wsproto(data[i:])
                    h += 2
                elif size == 127:
                    return self._to_wsproto(data[i:])
                if size > fast_max:
                    return self._to_wsproto(data[i:])
                end = h + 4 + size
                if end > n:
                    break
                payload = data[h + 4 : end]
                mask = data[h : h + 4]
                if size and mask != b"\0\0\0\0":
                    payload = (
                        int.from_bytes(payload, "little")
                        ^ int.from_bytes((mask * ((size >> 2) + 1))[:size], "little")
                    ).to_bytes(size, "little")
                if b0 == 0x82:
                    self._on_frame(payload)
                elif b0 == 0x81:
                    try:
                        text = payload.decode()
                    except UnicodeDecodeError:
                        return self._to_wsproto(data[i:])  # wsproto closes 1007
                    self._on_frame(text)
                else:  # a ping: the pong, as wsproto writes it (unmasked, same payload)
                    self._write(bytes((0x8A, size)) + payload)
                i = end
                if self.closing:
                    return None
                if self.ws is not None:  # made meanwhile (the echo writes with it)
                    return self._to_wsproto(data[i:])
            if i < n:
                self.rest = data[i:]
        finally:
            self._uncork()
        return None

    def _to_wsproto(self, data: bytes) -> None:
        ws = self._proto()
        if data:
            ws.receive_data(data)
        self._on_events(self.srv.max_frame)

    def _on_events(self, max_frame: int) -> None:
        """Handle the events in wsproto's buffer, replies corked into one write."""
        self.corked = True
        try:
            for event in self._proto().events():
                self._on_event(event, max_frame)
                if self.closing:
                    break
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            code = hint.code if isinstance(hint, CloseConnection) else 1002
            self.close(code, str(exc)[:100])
        finally:
            self._uncork()

    def _on_event(self, event: Any, max_frame: int) -> None:
        if isinstance(event, Message):
            # Hot path: a short message in one piece needs no reassembly (reassembly.feed's
            # first case, inlined: two calls less per client frame).
            data = event.data
            if event.message_finished and self.partial is None and len(data) <= max_frame // 4:
                self._on_frame(data)
            else:
                self._on_message(event, max_frame)
        elif isinstance(event, Ping):
            self._write(self._proto().send(event.response()))
        elif isinstance(event, CloseConnection):
            self._write(self._proto().send(event.response()))
            self.session.close()
            self.closing = True

    def _on_message(self, event: Message[Any], max_frame: int) -> None:
        """One piece of a data message (see ``chatd/net/reassembly.py``): handle it once whole."""
        try:
            self.partial, data = reassembly.feed(self.partial, event, max_frame, self.max_fragments)
        except reassembly.TooBig as exc:
            self.partial = None
            self.close(1009, str(exc))
            return
        if data is not None:
            self._on_frame(data)

    def _on_frame(self, data: str | bytes) -> None:
        try:
            frame = frames.parse(frames.decode(data))
            self.session.check(frame)  # hello first, and only once
            if isinstance(frame, frames.Hello):
                self._hello(frame)
            else:
                self._dispatch(frame)
        except (ChatError, ProtocolError) as exc:  # the domain refused, or the peer erred
            self.reply(error_frame(exc))
            code = close_code(exc)
            if code or not self.user_id:
                self.close(code or 4001, exc.code)
        except StorageUnavailable as exc:
            self.reply(error_frame(Unavailable(str(exc))))

    def _dispatch(self, frame: frames.ClientFrame) -> None:
        srv = self.srv
        if isinstance(frame, frames.Send):
            self.session.started()  # until finished(): the domain promises one call
            try:
                srv.messenger.send(self, frame.ref, frame.body, to=frame.to, channel=frame.channel)
            except BaseException:
                self.session.finished()  # refused at once: nothing in flight after all
                raise
        elif isinstance(frame, frames.Ping):
            self.reply({"type": "pong"})
        elif isinstance(frame, frames.History):
            page = srv.messenger.history(
                self.user_id,
                frame.ref,
                frame.channel,
                before=frame.before,
                limit=frame.limit,
                device=self,
            )
            if page is not None:  # else it comes from another shard
                self.reply(page)
        elif isinstance(frame, frames.Read):
            self.session.started()
            try:
                srv.receipts.read(self, frame.channel, frame.msg_id)
            except BaseException:
                self.session.finished()
                raise
        elif isinstance(frame, frames.Typing):
            srv.receipts.typing(self, frame.channel)

    def _hello(self, hello: frames.Hello) -> None:
        srv = self.srv
        # A token names its user (``<user_id>.<random>``), so a hello on another shard than
        # the user's home is redirected before the token is looked up (it lives there).
        named, dot, _ = hello.token.partition(".")
        if dot and validate.USER_ID.fullmatch(named):
            home = srv.router.home(named)
            if not home.local:
                raise WrongShard(f"{named} lives on shard {home.shard}", ws_url=home.url)
        user, expires_at = srv.accounts.authenticate_until(hello.token)
        cap = srv.config.limits.max_sessions_per_user
        if srv.sessions.count(user) >= cap:
            raise TooManySessions(f"at most {cap} sessions per user")
        device_id = f"{_device_prefix}{next(_device_ids):x}"
        welcome = self.session.accept_hello(
            hello, user_id=user, device_id=device_id, inbox_head=srv.store.inbox_head(user)
        )
        self.token_digest = token_digest(hello.token)
        # From now on the connection's deadline is the token's expiry (wall-clock ms turned
        # into trio time): the heartbeat wheel then signs the device out (expire). No timer
        # or task of its own.
        self.due = trio.current_time() + (expires_at - now_ms()) / 1000
        srv.sessions.add(self)
        srv.heartbeats.watch(self)  # filed again, by its new deadline and liveness
        srv.presence.connected(self)
        self.reply(welcome.frame)
        if welcome.replay_from is None:
            srv.presence.snapshot(self)
        else:
            self.replay_from = welcome.replay_from

    async def _replay(self) -> None:
        """Send inbox entries > since, then ``synced``; see docs/protocol.md "Sync".

        The session (``chatd/protocol/session.py``) refuses live deliveries while it is
        SYNCING (they are in the inbox and the next read finds them) and records each replayed
        seq. The last, empty read and the switch to live happen with no checkpoint in between:
        a batch committed after that read is delivered live (its hook runs later), one
        committed before it was replayed, and ``synced.head`` is the last seq replayed.
        """
        store, user = self.srv.store, self.user_id
        budget = self.srv.messenger.reply_bytes
        high_water = min(REPLAY_HIGH_WATER, budget)
        cursor = self.replay_from or 0
        self.replay_from = None
        while True:
            # At most REPLAY_CHUNK entries and, past the first, ``budget`` bytes of stored
            # messages per read, so a backlog of large messages never sits in memory.
            page = store.inbox_page(user, cursor, REPLAY_CHUNK, budget)
            if not page.entries:
                break
            for entry in page.entries:
                self.session.replayed(entry.seq)
                data = frames.encode(inbox_frame(entry), self.binary)
                if self.out_bytes and self.out_bytes + len(data) > high_water:
                    # Let the socket take what is queued before this frame could push the
                    # buffer past the high-water mark: the replay alone never overflows it.
                    await self._wait_drained()
                    if self.closing:
                        return
                self._write(data)
            cursor = page.entries[-1].seq
            self.srv.delivered(user, cursor)  # push: these messages reached a device
            await trio.lowlevel.checkpoint()
            if self.closing:
                return
        self.reply(self.session.synced())
        self.srv.presence.snapshot(self)

    # -- the DeviceSink port (chatd/domain/ports.py); reply and notify come with Outbound
    @property
    def out_cap(self) -> int:
        return self.srv.out_cap

    @property
    def write_stall(self) -> float:
        return self.srv.write_stall

    def spawn_flusher(self) -> None:
        self.srv.nursery.start_soon(self._flusher)

    def finished(self, answer: dict[str, Any] | ChatError | None) -> None:
        """One of this connection's sends or reads is done: answer it, and resume reading if
        backpressure paused it."""
        resume = self.session.finished()
        if isinstance(answer, ChatError):
            self.reply(error_frame(answer))
        elif answer is not None:
            self.reply(answer)
        if self.acks_waiter is not None and resume:
            self.acks_waiter.set()

    def deliver(self, seq: int, frame: Shared) -> None:
        """A live ``msg`` for inbox ``seq``: dropped while replaying or if already sent."""
        if not self.closing and self.session.offer(seq):
            self._write(self._encoded_msg(frame, seq))
            self.srv.delivered(self.user_id, seq)  # push: a device has it (a moot job)

    def end(self, code: str, message: str) -> None:
        """Sign the device out with domain error ``code``: the error frame, then the close code
        the transport's table gives it (1008 if none)."""
        self.reply(protocol_error_frame(code, message))
        self.close(CLOSE_CODE.get(code, 1008), message)


def _no_ack(user: str, seq: int) -> None:
    return None


class WsServer:
    """Runs upgraded connections; holds what they share (one reference per connection)."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        accounts: Accounts,
        sessions: Sessions,
        messenger: Messenger,
        receipts: Receipts,
        presence: Presence,
        heartbeats: Heartbeats,
        router: Router,
        lifecycle: Lifecycle,
        nursery: trio.Nursery,
        delivered: Callable[[str, int], None] | None = None,
    ) -> None:
        self.config = config
        #: the commit hooks' writes to connections, one send per connection per batch
        #: (chatd/app.py hands it to the store: ``Store.gather_hooks``)
        self.gather = Gather()
        self.out_cap = config.limits.outbound_queue_bytes
        self.write_stall = config.limits.write_stall_timeout
        self.max_frame = config.limits.max_frame_bytes
        #: the largest frame the fast path parses (Conn._on_bytes): short ones are whole
        #: messages that need no reassembly; a 16-bit length at most
        self.fast_max = min(self.max_frame // 4, 0xFFFF)
        #: idle connections wait here, not in a task each (chatd/net/parking.py)
        self.parking = Parking()
        self._parking_started = False
        self.store = store
        self.accounts = accounts
        self.sessions = sessions
        self.messenger = messenger
        self.receipts = receipts
        self.presence = presence
        self.heartbeats = heartbeats
        self.router = router
        self.lifecycle = lifecycle
        #: where helper tasks that belong to no single request run (output flushers)
        self.nursery = nursery
        #: the delivery ack: ``delivered(user, seq)`` once a ``msg`` frame for inbox ``seq``
        #: is written to one of the user's devices (push drops such a job as moot)
        self.delivered = delivered or _no_ack

    @property
    def conns(self) -> set[Conn]:
        return self.lifecycle.websockets

    def start(self, sock: socket.socket, binary: bool, trailing: bytes, peer: str = "") -> None:
        """Run an upgraded socket as a WebSocket connection in a task of its own."""
        self.run_conn(Conn(self, sock, binary, trailing, peer))

    def run_conn(self, conn: Conn) -> None:
        """Track ``conn`` (drained like any WebSocket) and run it; the parking that idle
        connections wait in starts with the first."""
        if not self._parking_started:
            self._parking_started = True
            self.nursery.start_soon(self.parking.run)
        self.lifecycle.websockets.add(conn)
        self.nursery.start_soon(conn.run)

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.lifecycle.websockets):
            conn.close(code, reason)
