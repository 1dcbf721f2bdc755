"""Presence transitions and read receipts as the domain sees them: a real LMDB, fake devices."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from chatd.config import SecurityConfig
from chatd.domain.accounts import Accounts
from chatd.domain.errors import Forbidden
from chatd.domain.presence import Presence
from chatd.domain.ratelimit import RateLimiter
from chatd.domain.receipts import Receipts
from chatd.domain.sessions import Sessions
from storage import Store
from tests.domain.fakes import FakeDevice, open_store, until
from tests.domain.test_messaging import messenger, users


async def befriend(store: Store, a: str, b: str) -> None:
    accounts = Accounts(store, SecurityConfig())
    await accounts.add_friend(a, b)
    await accounts.add_friend(b, a)


def statuses(device: FakeDevice, user: str) -> list[str]:
    return [
        f["status"] for f in device.notified if f["type"] == "presence" and f["user_id"] == user
    ]


async def test_online_then_offline_after_the_grace_period(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with open_store(tmp_path / "db") as store:
        await users(store, "alice", "bob", "carol")
        await befriend(store, "alice", "bob")
        sessions = Sessions()
        presence = Presence(store, sessions, grace=5.0, draining=lambda: False)
        bob, carol = FakeDevice("bob"), FakeDevice("carol")
        sessions.add(bob)
        sessions.add(carol)
        alice = FakeDevice("alice")
        sessions.add(alice)
        presence.connected(alice)
        assert statuses(bob, "alice") == ["online"]
        assert carol.notified == []  # not a friend: nothing, whatever groups they share
        sessions.remove(alice)
        presence.disconnected(alice, timed_out=False)
        presence.expire()
        assert statuses(bob, "alice") == ["online"]  # still in the grace period
        mock_clock.jump(5.0)
        presence.expire()
        assert statuses(bob, "alice") == ["online", "offline"]
        assert presence.status("alice")["status"] == "offline"
        with_forbidden = False
        try:
            await presence.query("carol", ["alice"])
        except Forbidden:
            with_forbidden = True
        assert with_forbidden


async def test_a_reconnect_within_the_grace_period_announces_nothing(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with open_store(tmp_path / "db") as store:
        await users(store, "alice", "bob")
        await befriend(store, "alice", "bob")
        sessions = Sessions()
        presence = Presence(store, sessions, grace=5.0, draining=lambda: False)
        bob = FakeDevice("bob")
        sessions.add(bob)
        first = FakeDevice("alice")
        sessions.add(first)
        presence.connected(first)
        sessions.remove(first)
        presence.disconnected(first, timed_out=False)
        mock_clock.jump(2.0)
        second = FakeDevice("alice")
        sessions.add(second)
        presence.connected(second)
        mock_clock.jump(10.0)
        presence.expire()
        assert statuses(bob, "alice") == ["online"]


async def test_a_burst_of_reads_is_one_or_two_commits_and_relays(tmp_path: Path) -> None:
    async with open_store(tmp_path / "db") as store:
        await users(store, "alice", "bob")
        sessions = Sessions()
        alice, bob = FakeDevice("alice"), FakeDevice("bob")
        sessions.add(alice)
        sessions.add(bob)
        m = messenger(store, sessions)
        for i in range(20):
            m.send(bob, f"r{i}", "hi", to="alice")
        await until(lambda: len(bob.answers) == 20)
        receipts = Receipts(
            store,
            sessions,
            read_limiter=RateLimiter(1000.0, 1000),
            typing_limiter=RateLimiter(1.0, 5),
        )
        for msg_id in range(1, 21):
            receipts.read(alice, "dm:alice:bob", msg_id)
        await until(lambda: len(alice.answers) == 20)
        assert alice.answers == [None] * 20  # every read in flight was answered, once
        reads = [f["msg_id"] for f in bob.notified if f["type"] == "read"]
        assert reads == sorted(reads) and reads[-1] == 20 and len(reads) <= 2
