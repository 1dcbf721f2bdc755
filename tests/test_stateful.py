"""Hypothesis stateful test of delivery over a live server subprocess (issue 16).

Two users, one device each, drive a real ``python -m chatd serve`` (durable commits) through
random sequences of: send and wait for the ack, send without waiting, drop the connection,
reconnect with ``since`` (resending every un-acked ref), and restart the server with SIGKILL.
Throughout, no connection may see the same (channel, msg_id) twice or an inbox seq out of
order, and a ref acked twice must be acked with the same message. At the end of each example
every ref is resent until acked and bench/torture.py's checker holds the rest: every acked
message exactly once in its channel's history and in every member's inbox, gap-free.

CI runs a few examples; ``CHATD_STATEFUL_EXAMPLES=500 CHATD_STATEFUL_STEPS=50`` runs the
issue's long version.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench import torture

EXAMPLES = int(os.environ.get("CHATD_STATEFUL_EXAMPLES", "6"))
STEPS = int(os.environ.get("CHATD_STATEFUL_STEPS", "12"))
DROPPED = (ConnectionClosed, InvalidHandshake, OSError, TimeoutError)


class Link:
    """One device of a :class:`torture.Device`: a synchronous WebSocket and its cursor."""

    def __init__(self, device: torture.Device) -> None:
        self.device = device
        self.ws: ClientConnection | None = None
        self.seen: set[tuple[str, int]] = set()
        self.last = [0]

    def connect(self) -> None:
        d = self.device
        ws = connect(
            d.ws_url, subprotocols=[Subprotocol("chatd.v1.json")], open_timeout=10, legacy=True
        )
        ws.send(json.dumps({"type": "hello", "token": d.token, "since": d.cursor}))
        welcome = json.loads(ws.recv(timeout=10))
        assert welcome["type"] == "welcome", welcome
        d.connects += 1
        self.ws, self.seen, self.last = ws, set(), [d.cursor]
        for frame in list(d.pending.values()):  # resend un-acked refs
            ws.send(json.dumps(frame))
        self.pump(until=lambda f: f.get("type") == "synced")

    def drop(self) -> None:
        if self.ws is not None:
            self.ws.socket.close()  # abrupt: no close handshake
            self.ws = None

    def send(self, wait: bool) -> None:
        assert self.ws is not None
        frame = self.device.new_send()
        try:
            self.ws.send(json.dumps(frame))
            if wait:
                self.pump(until=lambda f: f.get("ref") == frame["ref"])
        except DROPPED:
            self.drop()

    def pump(self, until: Any, timeout: float = 10.0) -> None:
        """Handle frames until one satisfies ``until`` (dropping the link if it dies)."""
        assert self.ws is not None
        try:
            while True:
                frame = json.loads(self.ws.recv(timeout=timeout))
                self.device.on_frame(frame, self.seen, self.last)
                if until(frame):
                    return
        except DROPPED:
            self.drop()

    def drain(self) -> None:
        """Handle whatever already arrived, without waiting."""
        if self.ws is None:
            return
        try:
            while True:
                self.device.on_frame(json.loads(self.ws.recv(timeout=0.05)), self.seen, self.last)
        except TimeoutError:
            return
        except DROPPED:
            self.drop()


class Delivery(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(prefix="chatd-stateful-")
        self.server = torture.Server(Path(self.tmp.name), torture.free_port())
        trio.run(self.server.start)
        devices = trio.run(torture._setup, self.server.url, 2, 8)
        self.links = [Link(device) for device in devices]
        for link in self.links:
            link.connect()

    @rule(who=st.integers(0, 1), wait=st.booleans())
    def send(self, who: int, wait: bool) -> None:
        link = self.links[who]
        if link.ws is not None:
            link.send(wait)

    @rule(who=st.integers(0, 1))
    def drop_connection(self, who: int) -> None:
        self.links[who].drop()

    @rule(who=st.integers(0, 1))
    def reconnect_with_since(self, who: int) -> None:
        link = self.links[who]
        link.drop()
        link.connect()

    @rule()
    def restart(self) -> None:
        for link in self.links:
            link.drain()
        self.server.kill()
        for link in self.links:
            link.drop()
        trio.run(self.server.start)

    @invariant()
    def no_duplicates_and_consistent_acks(self) -> None:
        for link in self.links:
            assert link.device.device_duplicates == []
            assert link.device.ack_mismatches == []
            assert link.device.errors == []

    def teardown(self) -> None:
        try:
            for _ in range(20):  # reconnect and resend until every ref is acked
                for link in self.links:
                    if link.device.pending:
                        link.drop()
                        link.connect()
                    if link.device.pending:
                        link.pump(until=lambda f, d=link.device: not d.pending, timeout=2.0)
                if not any(link.device.pending for link in self.links):
                    break
            assert not any(link.device.pending for link in self.links)
            for link in self.links:
                link.drain()
            self.no_duplicates_and_consistent_acks()
            result = trio.run(torture._check, self.server.url, [x.device for x in self.links])
            assert (result["lost"], result["duplicated"], result["gaps"]) == (0, 0, 0), result
        finally:
            for link in self.links:
                link.drop()
            self.server.close()
            self.tmp.cleanup()


Delivery.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDelivery = Delivery.TestCase
