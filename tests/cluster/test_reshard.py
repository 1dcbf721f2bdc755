"""Re-sharding 3 -> 4 real shards on a real Redis with data in place (docs/cluster.md
"Re-sharding"): stop traffic, wait for empty outboxes, stop the shards, ``chatd reshard``,
start four. Every user logs in, syncs the same inbox from 0, keeps friends and read marks,
every channel's history is complete, and chat goes on across old and new homes.

The crash/idempotence proofs run on in-process data: tests/cluster/test_reshard_data.py.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
from collections.abc import Callable
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from chatd.client.http import HttpClient
from chatd.domain.channels import dm_channel
from tests.cluster.redis import RedisServer
from tests.cluster.reshard_data import discovery
from tests.cluster.shards import Shards
from tests.cluster.test_cluster import PASSWORD, frames_until, hello, signup_login

FOUR = discovery(4)  # homes depend on the names only: s1..s4


async def _replay(nursery: trio.Nursery, login: dict[str, Any]) -> list[tuple]:
    """The whole inbox, from a hello with since=0: (seq, channel, msg_id, from, body)."""
    ws = await hello(nursery, login["ws_url"], login["token"], since=0)
    try:
        frames = await frames_until(ws, lambda got: got and got[-1]["type"] == "synced")
    finally:
        await ws.aclose()
    assert frames[-1]["type"] == "synced", frames
    return [(f["inbox"], f["channel"], f["msg_id"], f["from"], f["body"]) for f in frames[:-1]]


async def _state(shards: Shards, user: str, login: dict[str, Any], n: int) -> dict[str, Any]:
    """Friends and channel list (read marks), asked of shard ``n`` (any shard answers)."""
    names = shards.discovery.names
    async with HttpClient(shards.url(names[n % len(names)]), token=login["token"]) as http:
        return {
            "friends": await http.call("GET", "/v1/friends"),
            "channels": await http.call("GET", "/v1/channels"),
        }


async def _history(shards: Shards, channel: str, login: dict[str, Any]) -> list[tuple]:
    names = shards.discovery.names
    async with HttpClient(shards.url(names[-1]), token=login["token"]) as http:
        page = await http.call("GET", f"/v1/channels/{channel}/messages?limit=500")
    return [(m["msg_id"], m["from"], m["body"]) for m in page["messages"]]


async def _check_histories(
    shards: Shards,
    histories: dict[str, list[tuple]],
    group_members: dict[str, list[str]],
    logins: dict[str, dict[str, Any]],
) -> None:
    """Each channel's history, asked of the last shard by a member, is what was acked."""
    for channel, history in histories.items():
        members = group_members.get(channel) or channel.split(":")[1:]
        assert await _history(shards, channel, logins[members[0]]) == history, channel


async def _eventually(done: Callable[[], bool], wait: float = 20) -> None:
    for _ in range(int(wait / 0.05)):
        if done():
            return
        await trio.sleep(0.05)
    raise AssertionError("timed out")


async def _wait_outboxes_empty(shards: Shards) -> None:
    """Until every shard's /healthz shows outbox_pending 0 three times in a row, 0.2 s apart
    (a record committed a moment ago may not be counted yet)."""
    zeros = 0
    with trio.fail_after(20):
        while zeros < 3:
            pending = 0
            for shard in shards.discovery.shards:
                async with HttpClient(shard.url) as http:
                    pending += (await http.call("GET", "/healthz"))["outbox_pending"]
            zeros = zeros + 1 if not pending else 0
            await trio.sleep(0.2)


async def _send(ws: WebSocketConnection, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send_message(json.dumps({"type": "send", **frame}))
    got = await frames_until(ws, lambda g: any(f["type"] in ("ack", "error") for f in g))
    ack = next(f for f in got if f["type"] in ("ack", "error"))
    assert ack["type"] == "ack", ack
    return ack


async def test_reshard_three_to_four_with_data_in_place(
    shards: Shards, redis_server: RedisServer
) -> None:
    rng = random.Random(12)
    users = [f"r{i:03d}" for i in range(40)]
    logins = await signup_login(shards, users)
    moved = [u for u in users if FOUR.home(u).name != shards.home(u).name]
    assert 5 <= len(moved) <= 17, moved  # about a quarter, so the test exercises moves
    assert {FOUR.home(u).name for u in moved} == {"s4"}
    stay = [u for u in users if u not in moved]

    # Friendships (some accepted), across shards.
    for i in range(0, 20, 2):
        a, b = users[i], users[i + 1]
        async with HttpClient(shards.url("s1"), token=logins[a]["token"]) as http:
            await http.call("PUT", f"/v1/friends/{b}")
        if i % 4 == 0:
            async with HttpClient(shards.url("s2"), token=logins[b]["token"]) as http:
                await http.call("PUT", f"/v1/friends/{a}")

    # Groups spanning shards: one whose sequencer moves to s4, one that stays.
    groups: dict[str, str] = {}  # "moves" / "stays" -> channel
    group_members: dict[str, list[str]] = {}
    owners = iter(users)
    while len(groups) < 2:
        owner = next(owners)
        members = [u for u in rng.sample(users, 14) if u != owner]
        async with HttpClient(shards.url("s3"), token=logins[owner]["token"]) as http:
            group = await http.call("POST", "/v1/groups", {"name": "g", "members": members})
        kind = "moves" if FOUR.home(group["channel_id"]).name == "s4" else "stays"
        if kind not in groups:
            groups[kind] = group["channel_id"]
            group_members[group["channel_id"]] = group["members"]

    # Messages: both groups, DMs between random pairs; read marks.
    pairs = {tuple(sorted(rng.sample(users, 2))) for _ in range(40)}
    pairs |= {(min(a, b), max(a, b)) for a, b in zip(moved, stay, strict=False)}
    histories: dict[str, list[tuple]] = {}  # channel -> (msg_id, from, body), as acked
    async with trio.open_nursery() as nursery:
        conns = {u: await hello(nursery, logins[u]["ws_url"], logins[u]["token"]) for u in users}
        for channel in groups.values():
            for k, sender in enumerate(group_members[channel][:6]):
                body = f"{channel} {k}"
                frame = {"ref": f"{channel}-{k}", "channel": channel, "body": body}
                ack = await _send(conns[sender], frame)
                histories.setdefault(channel, []).append((ack["msg_id"], sender, body))
        for a, b in sorted(pairs):
            for x, y in ((a, b), (b, a)):
                ack = await _send(conns[x], {"ref": f"dm-{y}", "to": y, "body": f"{x} to {y}"})
                histories.setdefault(ack["channel"], []).append((ack["msg_id"], x, f"{x} to {y}"))
        for a, b in sorted(pairs)[::3]:
            read = {"type": "read", "channel": dm_channel(a, b), "msg_id": 2}
            await conns[a].send_message(json.dumps(read))
        for channel in groups.values():
            reader = group_members[channel][-1]
            read = {"type": "read", "channel": channel, "msg_id": 3}
            await conns[reader].send_message(json.dumps(read))
        await trio.sleep(0.3)  # the read marks commit (no answer on success)
        for ws in conns.values():
            await ws.aclose()
        nursery.cancel_scope.cancel()

    # Stop traffic, wait until every relayed record is applied, note what everyone sees.
    await _wait_outboxes_empty(shards)
    before: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        for i, user in enumerate(users):
            before[user] = {
                "inbox": await _replay(nursery, logins[user]),
                **await _state(shards, user, logins[user], i),
            }
        nursery.cancel_scope.cancel()
    await _check_histories(shards, histories, group_members, logins)
    for user in users:  # the cluster delivered everything before the move
        mine = {
            (channel, msg_id)
            for channel, history in histories.items()
            if user in (group_members.get(channel) or channel.split(":")[1:])
            for msg_id, _, _ in history
        }
        assert {(c, m) for _, c, m, _, _ in before[user]["inbox"]} == mine, user
    await _wait_outboxes_empty(shards)

    # The procedure: stop the shards, reshard, start four.
    shards.stop_all()
    old = shards.use_shards(["s1", "s2", "s3", "s4"])
    done = await trio.run_process(
        [sys.executable, "-m", "chatd", "reshard", "--from", str(old), "--to", str(shards.path)]
        + ["--data-root", str(shards.directory)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    report = done.stdout.decode()
    assert "users s1 -> s4" in report and "channels" in report, report
    shards.start_all()

    # Everyone logs in (any shard), goes home, and sees what they saw.
    after_logins = {}
    async with trio.open_nursery() as nursery:
        for i, user in enumerate(users):
            names = shards.discovery.names
            async with HttpClient(shards.url(names[i % 4])) as http:
                login = await http.call(
                    "POST", "/v1/login", {"user_id": user, "password": PASSWORD}
                )
            assert login["ws_url"] == shards.home(user).ws_url
            after_logins[user] = login
            state = {"inbox": await _replay(nursery, login), **await _state(shards, user, login, i)}
            assert state == before[user], user
            # The old token still works too (tokens moved with their user).
            async with HttpClient(shards.url(names[(i + 1) % 4]), token=logins[user]["token"]) as h:
                assert (await h.call("GET", "/v1/me"))["user_id"] == user
        nursery.cancel_scope.cancel()
    await _check_histories(shards, histories, group_members, after_logins)

    # Chat goes on: the moved group, a group that stayed, DMs between old and new homes.
    async with trio.open_nursery() as nursery:
        got: dict[str, list[dict[str, Any]]] = {u: [] for u in users}

        async def read(ws: WebSocketConnection, into: list[dict[str, Any]]) -> None:
            with contextlib.suppress(ConnectionClosed):  # closed at the end of the test
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] in ("msg", "ack", "error"):
                        into.append(frame)

        live = {}
        for user in users:
            login = after_logins[user]
            live[user] = await hello(nursery, login["ws_url"], login["token"])
            nursery.start_soon(read, live[user], got[user])
        expect: dict[str, list[tuple[str, str]]] = {u: [] for u in users}
        sent: dict[str, list[tuple[str, str]]] = {u: [] for u in users}

        async def send(sender: str, frame: dict[str, Any], to: list[str]) -> None:
            await live[sender].send_message(json.dumps({"type": "send", **frame}))
            sent[sender].append((frame["ref"], frame["body"]))
            for member in to:
                if member != sender:
                    expect[member].append((frame.get("channel", ""), frame["body"]))

        for channel in groups.values():
            for sender in (group_members[channel][0], group_members[channel][-1]):
                frame = {"ref": f"after-{channel}", "channel": channel, "body": f"after {sender}"}
                await send(sender, frame, group_members[channel])
        for a, b in list(zip(moved, stay, strict=False)):
            await send(a, {"ref": "after-dm", "to": b, "body": f"new {a}"}, [b])
        await _eventually(
            lambda: all(
                sum(f["type"] == "msg" for f in got[u]) >= len(expect[u])
                and sum(f["type"] in ("ack", "error") for f in got[u]) >= len(sent[u])
                for u in users
            )
        )
        for user in users:
            frames = got[user]
            assert not [f for f in frames if f["type"] == "error"], (user, frames)
            msgs = [f for f in frames if f["type"] == "msg"]
            seen = sorted(
                (f["channel"] if f["channel"].startswith("g:") else "", f["body"]) for f in msgs
            )
            assert seen == sorted(expect[user]), user
            seqs = sorted(f["inbox"] for f in frames)
            start = len(before[user]["inbox"]) + 1
            assert seqs == list(range(start, start + len(seqs))), (user, seqs)
        for channel in groups.values():  # msg_ids go on from the history before the move
            ids = sorted(
                {f["msg_id"] for fs in got.values() for f in fs if f["channel"] == channel}
            )
            assert ids == [len(histories[channel]) + 1, len(histories[channel]) + 2], channel
        # A member added to the moved group after the move gets its next message.
        channel = groups["moves"]
        newcomer = next(u for u in moved if u not in group_members[channel])
        owner = group_members[channel][0]
        async with HttpClient(shards.url("s2"), token=after_logins[owner]["token"]) as http:
            await http.call("PUT", f"/v1/groups/{channel}/members/{newcomer}")
        got[newcomer].clear()
        await live[owner].send_message(
            json.dumps({"type": "send", "ref": "welcome", "channel": channel, "body": "welcome"})
        )
        await _eventually(lambda: bool(got[newcomer]))
        assert [f["body"] for f in got[newcomer]] == ["welcome"]
        for ws in live.values():
            await ws.aclose()
        nursery.cancel_scope.cancel()
