"""Group chat: lifecycle, fan-out to 100 members, ordering, receipts, typing, authorization."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import trio

from chatd.client import ChatClient, ChatError, HttpClient, Session
from chatd.server import Server
from tests.conftest import make_user


async def frames_of(session: Session, kind: str, n: int) -> list[dict[str, Any]]:
    out = []
    with trio.fail_after(10):
        while len(out) < n:
            frame = await session.next_frame()
            if frame["type"] == kind:
                out.append(frame)
    return out


async def none_pending(session: Session, kind: str) -> None:
    """After a ping round trip, no frame of ``kind`` is waiting."""
    await session.ping()
    while session._in_recv.statistics().current_buffer_used:
        assert (await session.next_frame())["type"] != kind


async def create_group(owner: ChatClient, name: str, members: list[str]) -> dict[str, Any]:
    async with HttpClient(owner.base_url, token=owner.token) as http:
        return await http.call("POST", "/v1/groups", {"name": name, "members": members})  # type: ignore[no-any-return]


async def api(client: ChatClient, method: str, path: str, body: Any = None) -> Any:
    async with HttpClient(client.base_url, token=client.token) as http:
        return await http.request(method, path, body)


async def test_hundred_member_group_reaches_every_device_and_inbox(server: Server) -> None:
    owner = await make_user(server, "owner")
    others = []
    async with trio.open_nursery() as nursery:

        async def signup(i: int) -> None:
            others.append(await make_user(server, f"member_{i:03}"))

        for i in range(99):
            nursery.start_soon(signup, i)
    group = await create_group(owner, "everyone", [c.user_id for c in others])
    channel = group["channel_id"]
    assert group["owner"] == "owner" and len(group["members"]) == 100
    assert channel.startswith("g:") and 8 <= len(channel) - 2 <= 26

    # The cap counts the owner: a 101st member is refused, on create and on add.
    extra = await make_user(server, "extra")
    res = await api(owner, "PUT", f"/v1/groups/{channel}/members/extra")
    assert res.status == 400 and res.json()["error"] == "bad_request"
    res = await api(
        owner, "POST", "/v1/groups", {"name": "x", "members": [*group["members"], "extra"]}
    )
    assert res.status == 400

    online, offline = others[:59], others[59:]
    async with AsyncExitStack() as stack:
        sender = await stack.enter_async_context(owner.session())
        owner_other = await stack.enter_async_context(owner.session())
        devices = [await stack.enter_async_context(c.session()) for c in online]
        second_devices = [await stack.enter_async_context(c.session()) for c in online[:10]]
        ack = await sender.send(channel=channel, body="hello all")
        assert ack["msg_id"] == 1 and ack["channel"] == channel
        for device in [owner_other, *devices, *second_devices]:
            (msg,) = await frames_of(device, "msg", 1)
            assert msg["body"] == "hello all" and msg["from"] == "owner" and msg["msg_id"] == 1
            await none_pending(device, "msg")
        await none_pending(sender, "msg")
    for client in offline[:5]:
        async with client.session(since=0) as s:
            (msg,) = await frames_of(s, "msg", 1)
            assert msg["channel"] == channel and msg["inbox"] == 1
    for client in [owner, *others]:
        entries = server.app.store.inbox(client.user_id, 0, 10)
        assert [(e.message.channel, e.message.msg_id) for e in entries] == [(channel, 1)]
    assert server.app.store.inbox("extra", 0, 10) == []
    del extra


async def test_add_remove_and_leave(server: Server) -> None:
    owner, ann, bo, cy = [await make_user(server, u) for u in ("owner", "ann", "bob", "cyd")]
    group = await create_group(owner, "team", ["ann", "bob"])
    channel = group["channel_id"]
    async with owner.session() as o:
        await o.send(channel=channel, body="before cy")
        # Non-owners cannot add, or remove others.
        assert (await api(ann, "PUT", f"/v1/groups/{channel}/members/cyd")).status == 403
        assert (await api(ann, "DELETE", f"/v1/groups/{channel}/members/bob")).status == 403
        res = await api(owner, "PUT", f"/v1/groups/{channel}/members/cyd")
        assert res.status == 200 and res.json()["members"] == ["owner", "ann", "bob", "cyd"]
        assert (await api(owner, "PUT", f"/v1/groups/{channel}/members/nobody")).status == 404
        await o.send(channel=channel, body="after cy")
        # cy's inbox starts at the add; older history is readable through the channel.
        async with cy.session(since=0) as c:
            (msg,) = await frames_of(c, "msg", 1)
            assert msg["body"] == "after cy"
            assert [m["body"] for m in await c.history(channel)] == ["before cy", "after cy"]
        # The owner removes bo; ann leaves by herself.
        assert (await api(owner, "DELETE", f"/v1/groups/{channel}/members/bob")).status == 204
        assert (await api(ann, "DELETE", f"/v1/groups/{channel}/members/ann")).status == 204
        await o.send(channel=channel, body="after removal")
    for gone in (ann, bo):
        assert [e.message.body for e in server.app.store.inbox(gone.user_id, 0, 10)] == [
            "before cy",
            "after cy",
        ]
        assert (await api(gone, "GET", f"/v1/groups/{channel}")).status == 403
        assert (await api(gone, "GET", f"/v1/channels/{channel}/messages")).status == 403
        async with gone.session() as s:
            try:
                await s.send(channel=channel, body="let me in")
            except ChatError as exc:
                assert exc.code == "forbidden"
            else:
                raise AssertionError("a removed member could send")
    group = (await api(cy, "GET", f"/v1/groups/{channel}")).json()
    assert group["members"] == ["owner", "cyd"]
    # The owner leaving hands the group to the longest-standing member.
    assert (await api(owner, "DELETE", f"/v1/groups/{channel}/members/owner")).status == 204
    group = (await api(cy, "GET", f"/v1/groups/{channel}")).json()
    assert group["owner"] == "cyd" and group["members"] == ["cyd"]


async def test_concurrent_senders_one_order_for_every_device(server: Server) -> None:
    members = [await make_user(server, f"m{i:02}") for i in range(20)]
    watcher = await make_user(server, "watcher")
    group = await create_group(members[0], "busy", [m.user_id for m in members[1:]] + ["watcher"])
    channel = group["channel_id"]
    async with watcher.session() as w1, watcher.session() as w2:

        async def talk(client: ChatClient) -> None:
            async with client.session() as s:
                for i in range(10):
                    await s.send(channel=channel, body=f"{client.user_id}/{i}")

        async with trio.open_nursery() as nursery:
            for client in members:
                nursery.start_soon(talk, client)
        seen = [await frames_of(w, "msg", 200) for w in (w1, w2)]
    assert [m["msg_id"] for m in seen[0]] == list(range(1, 201))
    assert [m["body"] for m in seen[0]] == [m["body"] for m in seen[1]]
    for client in members:
        mine = [m["body"] for m in seen[0] if m["from"] == client.user_id]
        assert mine == [f"{client.user_id}/{i}" for i in range(10)]


async def test_read_receipts_are_monotonic_and_relayed(server: Server) -> None:
    owner, ann, eve = [await make_user(server, u) for u in ("owner", "ann", "eve")]
    channel = (await create_group(owner, "reads", ["ann"]))["channel_id"]
    async with owner.session() as o, ann.session() as a, ann.session() as a2, eve.session() as e:
        for i in range(5):
            await o.send(channel=channel, body=f"r{i}")
        await a.send_frame({"type": "read", "channel": channel, "msg_id": 4})
        (receipt,) = await frames_of(o, "read", 1)
        assert receipt == {"type": "read", "channel": channel, "user_id": "ann", "msg_id": 4}
        (own,) = await frames_of(a2, "read", 1)  # ann's other device learns it too
        assert own["msg_id"] == 4
        # An older mark is ignored: not stored, not relayed.
        await a.send_frame({"type": "read", "channel": channel, "msg_id": 2})
        await none_pending(o, "read")
        listing = (await api(ann, "GET", "/v1/channels")).json()["channels"]
        (row,) = [c for c in listing if c["channel_id"] == channel]
        assert row == {
            "channel_id": channel,
            "kind": "group",
            "name": "reads",
            "last_msg_id": 5,
            "read_msg_id": 4,
            "unread": 1,
        }
        # Beyond the last message, or from a non-member: refused; eve gets no receipts.
        await a.send_frame({"type": "read", "channel": channel, "msg_id": 99})
        error = await frames_of(a, "error", 1)
        assert error[0]["code"] == "bad_request"
        await e.send_frame({"type": "read", "channel": channel, "msg_id": 1})
        assert (await frames_of(e, "error", 1))[0]["code"] == "forbidden"
        await none_pending(e, "read")


async def test_typing_is_relayed_not_stored_and_rate_limited(server: Server) -> None:
    owner, ann, eve = [await make_user(server, u) for u in ("owner", "ann", "eve")]
    channel = (await create_group(owner, "typing", ["ann"]))["channel_id"]
    async with owner.session() as o, ann.session() as a, eve.session() as e:
        await o.send_frame({"type": "typing", "channel": channel})
        (notice,) = await frames_of(a, "typing", 1)
        assert notice == {"type": "typing", "channel": channel, "user_id": "owner"}
        await none_pending(o, "typing")
        await none_pending(e, "typing")
        for _ in range(10):
            await o.send_frame({"type": "typing", "channel": channel})
        error = (await frames_of(o, "error", 1))[0]
        assert error["code"] == "rate_limited" and error["retry_after"] > 0
        await e.send_frame({"type": "typing", "channel": channel})
        assert (await frames_of(e, "error", 1))[0]["code"] == "forbidden"
    assert server.app.store.channel_last_id(channel) == 0
    assert server.app.store.inbox("ann", 0, 10) == []


async def test_non_members_are_refused_everywhere(server: Server) -> None:
    owner, eve = await make_user(server, "owner"), await make_user(server, "eve")
    channel = (await create_group(owner, "private", []))["channel_id"]
    assert (await api(eve, "GET", f"/v1/groups/{channel}")).status == 403
    assert (await api(eve, "GET", f"/v1/channels/{channel}/messages")).status == 403
    assert (await api(eve, "PUT", f"/v1/groups/{channel}/members/eve")).status == 403
    assert (await api(eve, "DELETE", f"/v1/groups/{channel}/members/owner")).status == 403
    assert (await api(eve, "GET", "/v1/groups/g:doesnotexist1")).status == 403  # as above
    async with eve.session() as e:
        for frame in (
            {"type": "send", "ref": "x", "channel": channel, "body": "hi"},
            {"type": "history", "ref": "h", "channel": channel},
        ):
            await e.send_frame(frame)
            assert (await frames_of(e, "error", 1))[0]["code"] == "forbidden"
    bad = await api(owner, "POST", "/v1/groups", {"name": "", "members": []})
    assert bad.status == 400
    bad = await api(owner, "POST", "/v1/groups", {"name": "x", "members": ["ghost_user"]})
    assert bad.status == 404
    bad = await api(owner, "POST", "/v1/groups", {"name": "x", "members": "eve"})
    assert bad.status == 400


async def test_channel_list_most_recent_first(server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    channel = (await create_group(alice, "club", ["bob"]))["channel_id"]
    async with alice.session() as a:
        await a.send(to="bob", body="dm first")
        await trio.sleep(0.01)  # ts has millisecond resolution: make "later" unambiguous
        await a.send(channel=channel, body="group later")
    listing = (await api(bob, "GET", "/v1/channels")).json()["channels"]
    assert [c["channel_id"] for c in listing] == [channel, "dm:alice:bob"]
    assert listing[1] == {
        "channel_id": "dm:alice:bob",
        "kind": "dm",
        "name": "alice",
        "last_msg_id": 1,
        "read_msg_id": 0,
        "unread": 1,
    }
    mine = (await api(alice, "GET", "/v1/channels")).json()["channels"]
    assert all(c["unread"] == 0 for c in mine)  # sending marks one's own message read


async def test_resend_after_removal_still_returns_the_original_ack(server: Server) -> None:
    owner, ann = await make_user(server, "owner"), await make_user(server, "ann")
    channel = (await create_group(owner, "gone", ["ann"]))["channel_id"]
    async with ann.session() as a:
        first = await a.send(channel=channel, body="mine", ref="keep-me")
    assert (await api(owner, "DELETE", f"/v1/groups/{channel}/members/ann")).status == 204
    async with ann.session() as a:
        assert await a.send(channel=channel, body="mine", ref="keep-me") == first
        try:
            await a.send(channel=channel, body="new", ref="fresh")
        except ChatError as exc:
            assert exc.code == "forbidden"
        else:
            raise AssertionError("a removed member could send a new message")
