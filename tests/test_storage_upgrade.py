"""Format 1 -> 2 (issue 19): a data directory written with the old encoding (msgpack records
keyed name \\0 suffix, no ``meta``), built here byte for byte as the old code wrote it, is
converted when a store opens it, and reads back the same through the store."""

from __future__ import annotations

import os
from pathlib import Path

import lmdb
import msgpack
import pytest

from storage import Store
from storage.env import FORMAT, Env, FormatMismatch
from storage.migrate import OfflineEnv
from storage.upgrade import data_format

DM = "dm:alice:bob"
BIG = "y" * 3000  # too big for an item: its body goes to ``bodies``


def _key(name: str, number: int) -> bytes:
    return name.encode() + b"\x00" + number.to_bytes(8, "big")


def write_format_1(path: Path) -> None:
    """What the format-1 code stored after three 1:1 messages and one group message."""
    path.mkdir(parents=True)
    env = lmdb.open(str(path), max_dbs=20)
    pack = msgpack.Packer(use_bin_type=True).pack
    dbs = {
        name: env.open_db(name.encode())
        for name in ("accounts", "messages", "inboxes", "refs", "memberships", "channels")
    }
    sends = [
        (DM, 1, "alice", "hello", 1_000, "r1"),
        (DM, 2, "bob", "hi alice", 2_000, "r2"),
        (DM, 3, "alice", BIG, 3_000, "r3"),
        ("g:group0001", 1, "carol", "to the group", 4_000, "g1"),
    ]
    seqs = {"alice": 0, "bob": 0, "carol": 0}
    with env.begin(write=True) as txn:
        for user in seqs:
            txn.put(user.encode(), pack({"display_name": user, "pw": "x"}), db=dbs["accounts"])
        for channel, msg_id, sender, body, ts, ref in sends:
            record = pack({"from": sender, "body": body, "ts": ts})
            txn.put(_key(channel, msg_id), record, db=dbs["messages"])
            members = ["alice", "bob"] if channel == DM else ["alice", "carol"]
            ack = {"channel": channel, "msg_id": msg_id, "ts": ts}
            for user in members:
                seqs[user] += 1
                txn.put(_key(user, seqs[user]), pack([channel, msg_id]), db=dbs["inboxes"])
                if user == sender:
                    ack["inbox"] = seqs[user]
            txn.put(sender.encode() + b"\x00" + ref.encode(), pack(ack), db=dbs["refs"])
            txn.put(channel.encode(), pack([msg_id, ts]), db=dbs["channels"])
    env.close()


def check_contents(store: Store) -> None:
    page = store.inbox_page("alice", 0, 100)
    assert page.head == 4
    assert [(e.seq, e.message.channel, e.message.msg_id) for e in page.entries] == [
        (1, DM, 1),
        (2, DM, 2),
        (3, DM, 3),
        (4, "g:group0001", 1),
    ]
    assert [(m.sender, m.body, m.ts) for m in store.channel_page(DM)] == [
        ("alice", "hello", 1_000),
        ("bob", "hi alice", 2_000),
        ("alice", BIG, 3_000),
    ]
    assert [e.seq for e in store.inbox("bob", 1, 10)] == [2, 3]
    assert store.sent_ack("alice", "r3") == {"channel": DM, "msg_id": 3, "ts": 3_000, "inbox": 3}
    assert store.sent_ack("bob", "r2") == {"channel": DM, "msg_id": 2, "ts": 2_000, "inbox": 2}
    assert store.sent_ack("carol", "g1") == {
        "channel": "g:group0001",
        "msg_id": 1,
        "ts": 4_000,
        "inbox": 1,
    }
    assert store.sent_ack("alice", "r2") is None
    assert store.account("carol") == {"display_name": "carol", "pw": "x"}
    assert store.channel_last_id(DM) == 3


def test_a_format_1_directory_is_upgraded_when_a_store_opens_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_format_1(data)
    assert data_format(str(data)) == 1
    with pytest.raises(FormatMismatch):  # the environment alone refuses it
        Env(str(data), map_size=1 << 20, max_map_size=1 << 30, sync=False)
    store = Store(str(data), sync=False)
    try:
        check_contents(store)
    finally:
        store.env.close()
    assert data_format(str(data)) == FORMAT
    assert (data / "data.mdb.format-1").is_file()  # kept for the operator
    assert not (data / "upgrade.tmp").exists()
    store = Store(str(data), sync=False)  # a second open: nothing to do
    try:
        check_contents(store)
    finally:
        store.env.close()


def test_an_offline_command_upgrades_too_and_a_crashed_step_starts_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_format_1(data)
    os.makedirs(data / "upgrade.tmp")  # what a step cut short by a crash leaves behind
    (data / "upgrade.tmp" / "data.mdb").write_bytes(b"half")
    offline = OfflineEnv(str(data))
    offline.close()
    assert data_format(str(data)) == FORMAT
    store = Store(str(data), sync=False)
    try:
        check_contents(store)
    finally:
        store.env.close()
