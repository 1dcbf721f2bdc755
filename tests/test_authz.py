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
    assert (await api(ghost, "GET", "/v1/channels")).json() == {"channels": []}
    async with ghost.session(since=0) as g:
        with trio.fail_after(10):
            await g.synced.wait()
        assert g.welcome["inbox_head"] == 0 and g.cursor == 0
    res = await api(ghost, "GET", "/v1/channels/dm:alice:ghost/messages")
    assert res.status == 200 and res.json() == {"messages": []}


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
