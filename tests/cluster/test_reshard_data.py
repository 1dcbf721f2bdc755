"""``chatd reshard`` on data built by the real rules in-process (tests/cluster/reshard_data.py):
nothing lost or doubled, twice in a row, after a crash at any step, and traffic after it.

The end-to-end proof with real shards on a real Redis is tests/cluster/test_reshard.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from chatd.cluster.relay import TOPIC
from chatd.cluster.reshard import Report, ReshardError, reshard
from chatd.discovery import Discovery
from chatd.domain.channels import dm_members, is_group
from chatd.domain.groups_tx import add_member
from storage.env import Env
from tests.cluster.reshard_data import DataCluster, discovery, seed, snapshot


class Crash(Exception):
    pass


def _paths(root: Path, *discs: Discovery) -> dict[str, str]:
    return {n: str(root / n) for d in discs for n in d.names}


def _seeded(root: Path, disc: Discovery) -> tuple[list[str], list[str], dict[str, Any]]:
    cluster = DataCluster(root, disc)
    try:
        users, channels = seed(cluster)
        return users, channels, snapshot(cluster, users, channels)
    finally:
        cluster.close()


def _snapshot(root: Path, disc: Discovery, users: list[str], channels: list[str]) -> Any:
    cluster = DataCluster(root, disc)
    try:
        return snapshot(cluster, users, channels)
    finally:
        cluster.close()


def _same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys()
    for key, old in before.items():
        new = after[key]
        if key.startswith("user "):
            # The new home may also hold refs it kept as a channel's sequencer: more, never fewer.
            old, new = dict(old), dict(new)
            old_refs, new_refs = dict(old.pop("refs")), dict(new.pop("refs"))
            assert old_refs.items() <= new_refs.items(), key
        assert old == new, key


def _run(root: Path, old: Discovery, new: Discovery, **kw: Any) -> Report:
    return reshard(old, new, _paths(root, old, new), root / "reshard.journal", **kw)


def _traffic_after(root: Path, disc: Discovery, channels: list[str]) -> None:
    """One message in every channel, on the new layout: each reaches every member's inbox,
    and the first record of a channel to any shard after the move carries prev 0."""
    cluster = DataCluster(root, disc)
    try:
        heads: dict[str, int] = {}
        members: dict[str, list[str]] = {}
        for channel in channels:
            seq = cluster.home(channel)
            if is_group(channel):
                group = cluster.read(seq, lambda r, c=channel: r.group_get(c))
                members[channel] = list(group.members)
            else:
                members[channel] = dm_members(channel) or []
            for user in members[channel]:
                heads.setdefault(
                    user, cluster.read(cluster.home(user), lambda r, u=user: r.inbox_head(u))
                )
        for i, channel in enumerate(channels):
            sender = members[channel][0]
            to = "" if is_group(channel) else members[channel][1]
            cluster.send(sender, channel, f"after {i}", f"after-{i}", to)
        assert cluster.pump() == 0, "a record waits for a predecessor that never comes"
        assert all(prevs[0] == 0 for prevs in cluster.prevs.values()), cluster.prevs
        for channel in channels:
            for user in members[channel]:
                inbox = cluster.read(
                    cluster.home(user), lambda r, u=user, h=heads[user]: r.inbox(u, h, 1000)
                )
                assert channel in {e.message.channel for e in inbox}, (user, channel)
        # A group changed after the move reaches every member's home (versions go on).
        for channel in filter(is_group, channels):
            seq = cluster.home(channel)
            newcomer = next(u for u in heads if u not in members[channel])
            add = partial(add_member, channel=channel, user_id=newcomer, cap=100)
            group = cluster.write(seq, partial(add, relay=cluster.relays[seq]))
            assert cluster.pump() == 0
            for user in group.members:
                held = cluster.read(cluster.home(user), lambda r, c=channel: r.group_get(c))
                assert held == group, (channel, user, cluster.home(user))
    finally:
        cluster.close()


def test_adding_a_shard_moves_a_quarter_and_loses_nothing_twice(tmp_path: Path) -> None:
    old, new = discovery(3), discovery(4)
    root = tmp_path / "data"
    users, channels, before = _seeded(root, old)
    report = _run(root, old, new)
    moved = sum(report.users.values())
    assert 0.1 * len(users) <= moved <= 0.45 * len(users), report.users
    assert {to for _, to in report.users} == {"s4"}  # rendezvous: all to the new shard
    # A group follows rendezvous (to the new shard); a 1:1 channel its members' homes.
    assert report.channels
    for channel in channels:
        seq = new.home(channel).name
        if is_group(channel):
            assert seq in ("s4", old.home(channel).name), channel
        else:
            assert seq in {new.home(u).name for u in dm_members(channel) or ()}, channel
    assert sum(report.channels.values()) == sum(
        old.home(c).name != new.home(c).name for c in channels
    )
    _same(before, _snapshot(root, new, users, channels))
    again = _run(root, old, new)  # a second run: nothing left to move
    assert not again.users and not again.channels
    _same(before, _snapshot(root, new, users, channels))
    _traffic_after(root, new, channels)


def test_crash_after_any_step_then_rerun_finishes(tmp_path: Path) -> None:
    old, new = discovery(3), discovery(4)
    base = tmp_path / "base"
    users, channels, before = _seeded(base, old)
    steps: list[str] = []
    shutil.copytree(base, tmp_path / "clean")
    _run(tmp_path / "clean", old, new, step=steps.append, batch=3)
    assert len(steps) > 20, steps
    for k in range(len(steps)):
        root = tmp_path / f"crash{k}"
        shutil.copytree(base, root)
        calls = 0

        def crash(what: str, k: int = k) -> None:
            nonlocal calls
            calls += 1
            if calls > k:
                raise Crash(what)

        with pytest.raises(Crash):
            _run(root, old, new, step=crash, batch=3)
        _run(root, old, new, batch=3)
        _same(before, _snapshot(root, new, users, channels))
        shutil.rmtree(root)


def test_removing_a_shard_then_adding_it_back_empty(tmp_path: Path) -> None:
    """s3 goes away (its users and channels move to s1 and s2), its directory is archived,
    and a new s3 starts empty: relay cursors that named the old s3 must not make the new
    one wait for messages it never had."""
    three, two = discovery(3), discovery(2)
    root = tmp_path / "data"
    users, channels, before = _seeded(root, three)
    report = _run(root, three, two)
    assert {a for a, _ in report.users} == {"s3"} and report.channels
    _same(before, _snapshot(root, two, users, channels))
    shutil.move(root / "s3", tmp_path / "s3-archived")
    _run(root, two, three)
    _same(before, _snapshot(root, three, users, channels))
    _traffic_after(root, three, channels)


def test_refuses_while_records_wait_in_an_outbox(tmp_path: Path) -> None:
    old, new = discovery(3), discovery(4)
    root = tmp_path / "data"
    users, channels, before = _seeded(root, old)
    env = Env(str(root / "s2"), map_size=16 << 20, max_map_size=1 << 30, sync=True)
    with env.env.begin(write=True) as txn:
        txn.put(b"cluster\x00" + (5).to_bytes(8, "big"), b"x", db=env.dbs["outbox"])
    env.close()
    with pytest.raises(ReshardError, match="shard s2: 1 relayed record"):
        _run(root, old, new)
    assert not (root / "reshard.journal").exists()
    _same(before, _snapshot(root, old, users, channels))  # nothing moved


def test_confirmed_records_not_yet_deleted_do_not_stop_the_move(tmp_path: Path) -> None:
    """A shard stopped between a confirmation and the publisher's delete keeps the record:
    it is recognised as applied (the message is at its destination) and dropped."""
    old, new = discovery(3), discovery(4)
    root = tmp_path / "data"
    cluster = DataCluster(root, old)
    users, channels = seed(cluster)
    channel = next(
        c
        for c in channels
        if c.startswith("dm:") and len({cluster.home(u) for u in c.split(":")[1:]}) == 2
    )
    a, b = channel.split(":")[1:]
    cluster.send(a, channel, "last", "last-ref", b)
    records = cluster.read(cluster.home(channel), lambda r: r.outbox_pending(TOPIC, 100))
    assert cluster.pump() == 0
    seq = cluster.home(channel)
    cluster.write(seq, lambda tx: [tx.outbox_put(TOPIC, s, raw) for s, raw in records])
    before = snapshot(cluster, users, channels)
    cluster.close()
    _run(root, old, new)
    _same(before, _snapshot(root, new, users, channels))


def test_refuses_while_a_shard_runs(tmp_path: Path) -> None:
    old, new = discovery(3), discovery(4)
    root = tmp_path / "data"
    _seeded(root, old)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import lmdb,sys; e=lmdb.open(sys.argv[1]); print(1, flush=True); sys.stdin.read()",
            str(root / "s1"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"1"
        with pytest.raises(ReshardError, match="shard s1: .* open in another process"):
            _run(root, old, new)
    finally:
        holder.communicate(b"", timeout=10)
    _run(root, old, new)  # once it stopped, the move runs
