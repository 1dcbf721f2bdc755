"""A cluster's data without processes: one real LMDB per shard, written by the real rules.

:class:`DataCluster` runs the domain's transaction functions on the shard that would run them
(a send on the channel's sequencer, a friend request on the asker's home) and hands each
outbox record of topic ``cluster`` to its destination's applier functions, as the publisher
and applier would, until every outbox is empty. The re-shard tests build data with it, read
every user's and channel's state through the owner a discovery names (:func:`snapshot`), and
check that nothing was lost or doubled by a move.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from chatd.cluster import wire
from chatd.cluster.relay import GROUP_REPLICA, TOPIC, ClusterRelay
from chatd.cluster.router import ClusterRouter
from chatd.discovery import Discovery, Shard
from chatd.domain import friends_tx
from chatd.domain.accounts import token_digest
from chatd.domain.channels import dm_channel
from chatd.domain.groups_tx import create_group
from chatd.domain.memberships_tx import mark_read
from chatd.domain.messaging_tx import append_message
from chatd.domain.replica_tx import EARLY, apply_group, apply_message
from storage import Group, ReadTx, WriteTx
from storage.env import Env, Op


def discovery(n: int, names: list[str] | None = None) -> Discovery:
    names = names or [f"s{i + 1}" for i in range(n)]
    shards = [
        Shard(name, f"http://127.0.0.1:{9000 + i}", f"127.0.0.1:{9100 + i}")
        for i, name in enumerate(names)
    ]
    return Discovery(shards=tuple(shards), broker_url="redis://127.0.0.1:1/0")


def _apply(tx: WriteTx, record: wire.Relayed | wire.Op, relay: ClusterRelay) -> str:
    if isinstance(record, wire.Relayed):
        r = record
        return apply_message(tx, r.message, prev=r.prev, members=r.members, ref=r.ref).outcome
    d = record.data
    if record.kind == wire.FRIEND:
        friends_tx.apply_friend(tx, d["u"], d["o"], d["s"], relay)
    else:
        name, owner, members, created_at = d["g"]
        group = Group(name, owner, tuple(members), created_at)
        apply_group(tx, d["c"], group, version=d["v"], users=d["u"], version_key=GROUP_REPLICA)
    return "op"


class DataCluster:
    """Every shard's LMDB open in this process, for the layout ``disc`` describes."""

    def __init__(self, root: Path, disc: Discovery) -> None:
        self.disc = disc
        self.envs = {
            n: Env(str(root / n), map_size=16 << 20, max_map_size=1 << 30, sync=False, view=WriteTx)
            for n in disc.names
        }
        self.relays = {
            n: ClusterRelay(n, ClusterRouter(disc, n).home, lambda: None) for n in disc.names
        }
        #: (destination, channel) -> the prev of every message record applied there
        self.prevs: dict[tuple[str, str], list[int]] = {}
        self.ts = 1_700_000_000_000

    def close(self) -> None:
        for env in self.envs.values():
            env.close()

    def home(self, key: str) -> str:
        return self.disc.home(key).name

    def write(self, shard: str, fn: Callable[[WriteTx], Any]) -> Any:
        op = Op(fn, lambda result, error: None)
        self.envs[shard].commit_batch([op])
        if op.error is not None:
            raise op.error
        return op.result

    def read(self, shard: str, fn: Callable[[ReadTx], Any]) -> Any:
        with self.envs[shard].read() as txn:
            return fn(ReadTx(txn))

    def pump(self) -> int:
        """Deliver every outbox record until none is left; how many wait for a predecessor
        that never comes (0 in a healthy cluster)."""
        while True:
            progress = False
            for origin in self.disc.names:
                pending = self.read(origin, lambda r: r.outbox_pending(TOPIC, 1_000_000))
                done = []
                for seq, raw in pending:
                    dest, payload = wire.unpack(raw)
                    record = wire.decode(payload)
                    assert not isinstance(record, tuple)
                    relay = self.relays[dest]
                    outcome = self.write(dest, partial(_apply, record=record, relay=relay))
                    if isinstance(record, wire.Relayed) and outcome != EARLY:
                        key = (dest, record.message.channel)
                        self.prevs.setdefault(key, []).append(record.prev)
                    if outcome != EARLY:
                        done.append(seq)
                if done:
                    self.write(origin, lambda tx, d=done: tx.outbox_delete(TOPIC, d))
                    progress = True
            if not progress:
                return sum(
                    len(self.read(n, lambda r: r.outbox_pending(TOPIC, 1_000_000)))
                    for n in self.disc.names
                )

    # -- what users do

    def signup(self, user: str) -> None:
        def fn(tx: WriteTx) -> None:
            tx.account_insert(user, {"display_name": user, "created_at": 1, "pw": "x"})
            tx.token_put(token_digest(f"{user}.a"), user, 2_000_000_000_000)
            tx.token_put(token_digest(f"{user}.b"), user, 2_000_000_000_000)
            tx.push_sub_put(user, "p1", {"kind": "webhook", "url": f"https://x/{user}"})

        self.write(self.home(user), fn)

    def befriend(self, a: str, b: str, accept: bool) -> None:
        relay = self.relays[self.home(a)]
        self.write(self.home(a), lambda tx: friends_tx.request_friend(tx, a, b, relay))
        self.pump()
        if accept:
            relay = self.relays[self.home(b)]
            self.write(self.home(b), lambda tx: friends_tx.request_friend(tx, b, a, relay))
            self.pump()

    def group(self, channel: str, owner: str, members: list[str]) -> None:
        seq = self.home(channel)
        relay = self.relays[seq]
        self.write(
            seq,
            lambda tx: create_group(
                tx, channel, name=channel, owner=owner, members=members, created_at=1, relay=relay
            ),
        )
        self.pump()

    def send(self, sender: str, channel: str, body: str, ref: str, to: str = "") -> None:
        members = [sender, to] if to else None
        self.ts += 1
        seq = self.home(channel)
        fn = partial(
            append_message,
            sender=sender,
            ref=ref,
            channel=channel,
            members=members,
            body=body,
            ts=self.ts,
            relay=self.relays[seq],
        )
        self.write(seq, fn)

    def read_mark(self, user: str, channel: str, msg_id: int) -> None:
        self.write(self.home(user), lambda tx: mark_read(tx, user, channel, msg_id))


def seed(cluster: DataCluster, n_users: int = 24, seed: int = 7) -> tuple[list[str], list[str]]:
    """Users, friendships, DMs, two groups, messages and read marks; (users, channels)."""
    rng = random.Random(seed)
    users = [f"user{i:03d}" for i in range(n_users)]
    for user in users:
        cluster.signup(user)
    for i in range(0, n_users - 1, 2):
        cluster.befriend(users[i], users[i + 1], accept=i % 4 == 0)
    groups = ["g:alpha-channel", "g:beta-channel"]
    cluster.group(groups[0], users[0], users[: n_users // 2 + 3])
    cluster.group(groups[1], users[-1], users[n_users // 3 :])
    dms = []
    for k in range(n_users):
        a, b = rng.sample(users, 2)
        channel = dm_channel(a, b)
        for j in range(3):
            cluster.send(a if j % 2 == 0 else b, channel, f"{a}/{b} {j}", f"{k}-{j}", b)
        dms.append(channel)
    for i in range(40):
        group = groups[i % 2]
        members = users[: n_users // 2 + 3] if i % 2 == 0 else users[n_users // 3 :]
        cluster.send(rng.choice(members), group, f"group {i}", f"grp-{i}")
    assert cluster.pump() == 0
    for user in users[::3]:
        for channel in sorted(set(dms)):
            if user in channel.split(":"):
                cluster.read_mark(user, channel, 2)
    return users, groups + sorted(set(dms))


def snapshot(cluster: DataCluster, users: list[str], channels: list[str]) -> dict[str, Any]:
    """Every user's state read on its home, every channel's on its sequencer (as the layout
    of ``cluster`` says), and where each account and token is."""
    out: dict[str, Any] = {}
    for user in users:
        home = cluster.home(user)

        def mine(r: ReadTx, user: str = user) -> dict[str, Any]:
            return {
                "account": r.account_get(user),
                "tokens": [r.token_get(token_digest(f"{user}.{x}")) for x in "ab"],
                "friends": r.friends(user),
                "inbox": [(e.seq, e.message) for e in r.inbox(user, 0, 1_000_000)],
                "head": r.inbox_head(user),
                "channels": r.channel_list(user, limit=1000),
                "refs": list(r.txn.scan("refs", user)),
                "push": r.push_subs(user),
            }

        out[f"user {user}"] = cluster.read(home, mine)
        where = [
            n
            for n in cluster.disc.names
            if cluster.read(n, lambda r, u=user: r.account_get(u)) is not None
            or cluster.read(n, lambda r, u=user: r.token_get(token_digest(f"{u}.a"))) is not None
            or cluster.read(n, lambda r, u=user: r.push_subs(u))
        ]
        assert where == [home], f"{user}'s account, tokens or push are on {where}, not {home}"
    for channel in channels:
        seq = cluster.home(channel)

        def history(r: ReadTx, channel: str = channel) -> dict[str, Any]:
            return {
                "history": r.channel_page(channel, after=0, limit=1_000_000).messages,
                "group": r.group_get(channel),
                "last": r.channel_last(channel),
            }

        out[f"channel {channel}"] = cluster.read(seq, history)
    return out
