"""Authorization: 1:1 channels only between existing accounts; presence only between friends."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from chatd.client import ChatClient, ChatError, HttpClient, Session
from chatd.server import Server
from tests.conftest import make_user


async def api(client: ChatClient, method: str, path: str) -> Any:
    async with HttpClient(client.base_url, token=client.token) as http:
        return await http.request(method, path)


async def befriend(a: ChatClient, b: ChatClient) -> None:
    for x, y in ((a, b), (b, a)):
        assert (await api(x, "PUT", f"/v1/friends/{y.user_id}")).status == 200


async def presence_query(client: ChatClient, *users: str) -> Any:
    return await api(client, "GET", "/v1/presence?" + "&".join(f"user_id={u}" for u in users))


async def refused(session: Session, frame: dict[str, Any]) -> dict[str, Any]:
    """Send ``frame`` and return the error frame that answers it."""
    with trio.fail_after(10):
        await session.send_frame(frame)
        while (reply := await session.next_frame())["type"] != "error":
            pass
    return reply


# -- 1:1 channels named by id


async def test_dm_by_channel_to_an_unknown_user_stores_nothing(server: Server) -> None:
    alice = await make_user(server, "alice")
    await make_user(server, "bob")
    async with alice.session() as a:
        with pytest.raises(ChatError) as err:
            await a.send(channel="dm:alice:ghost", body="boo", ref="r-ghost")
        assert err.value.code == "not_found"
        # The same refusal for every other use of such a channel, over WebSocket and HTTP.
        for frame in (
            {"type": "history", "ref": "h1", "channel": "dm:alice:ghost"},
            {"type": "read", "channel": "dm:alice:ghost", "msg_id": 1},
            {"type": "typing", "channel": "dm:alice:ghost"},
        ):
            assert (await refused(a, frame))["code"] == "not_found", frame
        res = await api(alice, "GET", "/v1/channels/dm:alice:ghost/messages")
        assert res.status == 404 and res.json()["error"] == "not_found"
        # The ref was not kept: reusing it sends a new message to a real user.
        ack = await a.send(to="bob", body="hi", ref="r-ghost")
        assert ack["channel"] == "dm:alice:bob" and ack["msg_id"] == 1 and ack["inbox"] == 1
    listed = (await api(alice, "GET", "/v1/channels")).json()["channels"]
    assert [c["channel_id"] for c in listed] == ["dm:alice:bob"]
    # Whoever signs up as ghost later finds nothing addressed to it.
    ghost = await make_user(server, "ghost")
    assert (await api(ghost, "GET", "/v1/channels")).json()["channels"] == []
    async with ghost.session(since=0) as g:
        with trio.fail_after(10):
            await g.synced.wait()
        assert g.welcome["inbox_head"] == 0 and g.cursor == 0
    res = await api(ghost, "GET", "/v1/channels/dm:alice:ghost/messages")
    assert res.status == 200 and res.json()["messages"] == []


async def test_dm_by_channel_between_existing_users_still_works(server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    async with alice.session() as a, bob.session() as b:
        ack = await a.send(channel="dm:alice:bob", body="by id")
        assert ack["msg_id"] == 1
        with trio.fail_after(10):
            msg = await b.next_frame()
        assert msg["type"] == "msg" and msg["body"] == "by id"
        with pytest.raises(ChatError) as err:
            await a.send(channel="dm:bob:carol", body="not mine")
        assert err.value.code == "forbidden"


# -- presence is for friends only


async def test_group_co_members_do_not_see_each_others_presence(server: Server) -> None:
    alice, bob, carol = [await make_user(server, u) for u in ("alice", "bob", "carol")]
    # A stranger builds a group around alice: that must not make her presence visible.
    async with HttpClient(carol.base_url, token=carol.token) as http:
        await http.call("POST", "/v1/groups", {"name": "g", "members": ["alice"]})
    await befriend(alice, bob)
    async with alice.session():
        res = await presence_query(carol, "alice")
        assert res.status == 403 and res.json()["error"] == "forbidden"
        res = await presence_query(alice, "carol")
        assert res.status == 403 and res.json()["error"] == "forbidden"
        res = await presence_query(bob, "alice")
        assert res.status == 200 and res.json()["presence"][0]["status"] == "online"
        # Oneself is always allowed.
        res = await presence_query(carol, "carol")
        assert res.status == 200 and res.json()["presence"][0]["user_id"] == "carol"


async def test_pending_and_removed_friends_see_no_presence(server: Server) -> None:
    alice, bob, carol = [await make_user(server, u) for u in ("alice", "bob", "carol")]
    assert (await api(alice, "PUT", "/v1/friends/carol")).status == 200  # carol: pending
    assert (await presence_query(carol, "alice")).status == 403
    assert (await presence_query(alice, "carol")).status == 403
    await befriend(alice, bob)
    assert (await presence_query(bob, "alice")).status == 200
    assert (await api(bob, "DELETE", "/v1/friends/alice")).status == 204
    assert (await presence_query(bob, "alice")).status == 403
    assert (await presence_query(alice, "bob")).status == 403


async def test_unknown_users_and_strangers_look_the_same(server: Server) -> None:
    alice = await make_user(server, "alice")
    await make_user(server, "stranger")
    known = await presence_query(alice, "stranger")
    unknown = await presence_query(alice, "nobodyhere")
    assert known.status == unknown.status == 403
    assert known.json()["error"] == unknown.json()["error"] == "forbidden"
    # The message names what was asked, and nothing else tells the two apart.
    assert known.json()["message"].replace("stranger", "X") == unknown.json()["message"].replace(
        "nobodyhere", "X"
    )
    assert set(known.json()) == set(unknown.json())


async def test_presence_frames_go_to_friends_only(server: Server) -> None:
    alice, bob, carol = [await make_user(server, u) for u in ("alice", "bob", "carol")]
    async with HttpClient(carol.base_url, token=carol.token) as http:
        await http.call("POST", "/v1/groups", {"name": "g", "members": ["alice", "bob"]})
    await befriend(alice, bob)
    async with alice.session() as a, carol.session() as c:
        async with bob.session() as b:
            await b.synced.wait()
            # bob's snapshot names his friend alice only; alice hears bob come online; carol,
            # a co-member but no friend, got an empty snapshot and hears nothing.
            assert [(f["user_id"], f["status"]) for f in await drained(b)] == [("alice", "online")]
            assert [(f["user_id"], f["status"]) for f in await drained(a)] == [
                ("bob", "offline"),
                ("bob", "online"),
            ]
            assert await drained(c) == []


async def drained(session: Session) -> list[dict[str, Any]]:
    """Every frame received so far (a ping round trip flushes the pipe first)."""
    await session.ping()
    out = []
    while session._in_recv.statistics().current_buffer_used:
        out.append(await session.next_frame())
    return out
