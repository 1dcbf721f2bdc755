"""The send path as the domain sees it: a real LMDB, fake devices, no sockets."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from chatd.config import SecurityConfig
from chatd.domain.accounts import Accounts
from chatd.domain.errors import ChatError, NotFound, Unavailable
from chatd.domain.messaging import Messenger
from chatd.domain.ports import LocalRouter, OutboxHook, Router
from chatd.domain.ratelimit import RateLimiter
from chatd.domain.sessions import Sessions
from storage import Store
from tests.domain.fakes import ElsewhereRouter, FakeDevice, RecordingHook, open_store, until


def messenger(
    store: Store,
    sessions: Sessions,
    router: Router | None = None,
    hooks: tuple[OutboxHook, ...] = (),
) -> Messenger:
    return Messenger(
        store,
        sessions,
        router or LocalRouter(),
        send_limiter=RateLimiter(1000.0, 1000),
        history_limiter=RateLimiter(1000.0, 1000),
        max_body=100,
        reply_bytes=1 << 19,
        outbox_hooks=hooks,
    )


async def users(store: Store, *names: str) -> None:
    accounts = Accounts(store, SecurityConfig())
    for name in names:
        await accounts.signup(name, "correct horse", None)


async def test_send_acks_the_sender_and_delivers_to_every_other_device(tmp_path: Path) -> None:
    async with open_store(tmp_path / "db") as store:
        await users(store, "alice", "bob")
        sessions = Sessions()
        phone, laptop, bob = FakeDevice("alice"), FakeDevice("alice"), FakeDevice("bob")
        for device in (phone, laptop, bob):
            sessions.add(device)
        m = messenger(store, sessions)
        m.send(phone, "r1", "hi", to="bob")
        await until(lambda: phone.answers)
        [ack] = phone.answers
        assert isinstance(ack, dict)
        assert ack == {
            "type": "ack",
            "ref": "r1",
            "channel": "dm:alice:bob",
            "msg_id": 1,
            "ts": ack["ts"],
            "inbox": 1,
        }
        assert phone.delivered == []  # the sending device has its ack instead
        assert [seq for seq, _ in laptop.delivered] == [1]
        [(seq, frame)] = bob.delivered
        assert (seq, frame["body"], frame["from"], frame["msg_id"]) == (1, "hi", "alice", 1)


async def test_a_resent_ref_gets_its_first_ack_and_stores_nothing(tmp_path: Path) -> None:
    async with open_store(tmp_path / "db") as store:
        await users(store, "alice", "bob")
        sessions = Sessions()
        alice, bob = FakeDevice("alice"), FakeDevice("bob")
        sessions.add(bob)
        m = messenger(store, sessions)
        m.send(alice, "r1", "hi", to="bob")
        await until(lambda: alice.answers)
        m.send(alice, "r1", "something else", to="bob")  # answered by the commit
        await until(lambda: len(alice.answers) == 2)
        assert alice.answers[0] == alice.answers[1]
        # Refused now (too large): the ref was committed, so its first ack, at once.
        m.send(alice, "r1", "x" * 101, to="bob")
        assert len(alice.answers) == 3 and alice.answers[2] == alice.answers[0]
        await trio.sleep(0.05)
        assert len(bob.delivered) == 1
        assert store.channel_last_id("dm:alice:bob") == 1


async def test_refusals_raise_with_the_ref_and_promise_no_answer(tmp_path: Path) -> None:
    async with open_store(tmp_path / "db") as store:
        await users(store, "alice")
        alice = FakeDevice("alice")
        m = messenger(store, Sessions())
        with pytest.raises(NotFound) as info:
            m.send(alice, "r1", "hi", to="ghost")
        assert info.value.ref == "r1"
        with pytest.raises(ChatError) as big:
            m.send(alice, "r2", "x" * 101, to="ghost")
        assert big.value.code == "too_large"
        await trio.sleep(0.05)
        assert alice.answers == []


async def test_a_channel_sequenced_elsewhere_is_unavailable_here(tmp_path: Path) -> None:
    async with open_store(tmp_path / "db") as store:
        await users(store, "alice", "bob")
        alice = FakeDevice("alice")
        m = messenger(store, Sessions(), ElsewhereRouter())
        with pytest.raises(Unavailable) as info:
            m.send(alice, "r1", "hi", to="bob")
        assert info.value.retry_after and info.value.ref == "r1"
        assert store.channel_last_id("dm:alice:bob") == 0


async def test_outbox_hooks_store_records_with_the_message(tmp_path: Path) -> None:
    async with open_store(tmp_path / "db") as store:
        await users(store, "alice", "bob")
        alice = FakeDevice("alice")
        m = messenger(store, Sessions(), hooks=(RecordingHook(),))
        m.send(alice, "r1", "hi", to="bob")
        await until(lambda: alice.answers)
        m.send(alice, "r1", "hi", to="bob")  # a resend: no second record
        m.send(alice, "r2", "again", to="bob")
        await until(lambda: len(alice.answers) == 3)
        records = [record for _seq, record in store.outbox_pending("test", 10)]
        assert records == [b"dm:alice:bob:1:bob", b"dm:alice:bob:2:bob"]
