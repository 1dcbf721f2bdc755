"""The authorization matrix: every HTTP route and every client frame type, tried by every kind
of caller, against a table of expected outcomes.

The routes are read from the running server's router and the frame types from
``chatd.protocol.frames.ClientFrame``, so a new route or frame type without a row here fails
(:func:`test_every_route_and_frame_type_has_a_row`). Wherever an id could be probed (a group,
a push subscription, a user in a presence query), a non-member asking about a real id and
about one that does not exist gets the same status, code and message (the id aside).

Callers, one column each (:data:`CALLERS`): no token at all, a token of the right shape that
was never issued, a member's expired token, a member's logged-out token, an outsider (an
account with no tie to anyone), a non-member (the owner's friend, not in the group), a removed
member, a member and the group's owner.
"""

from __future__ import annotations

import base64
import re
import secrets
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from chatd.client import ChatClient, HttpClient
from chatd.client.http import HttpResponse
from chatd.domain.accounts import now_ms, token_digest
from chatd.protocol import frames
from chatd.server import Server
from tests.conftest import PASSWORD, make_config, make_user, running
from tests.wsraw import RawWs, close_all

CALLERS = (
    "anonymous",
    "garbage",
    "expired",
    "revoked",
    "outsider",
    "non_member",
    "removed",
    "member",
    "owner",
)
BAD_TOKENS = CALLERS[:4]
MISSING_GROUP = "g:" + "A" * 16  # well formed, never created
MISSING_SUB = "nosuchsubscription0"
A = "401 401 401 401"  # the four callers without a valid token, on an authenticated route


@dataclass(frozen=True)
class HttpRow:
    path: str  # {G} the group, {me} the caller's name, {sub} the owner's push subscription
    cells: str  # one status per caller, in CALLERS order
    body: Any = None
    fresh_token: bool = False  # the call ends the token (logout): use a new one


#: (method, route pattern) -> the row. Patterns as written in chatd/net/api.py.
HTTP: dict[tuple[str, str], HttpRow] = {
    ("GET", "/healthz"): HttpRow("/healthz", "200 200 200 200 200 200 200 200 200"),
    ("GET", "/metrics"): HttpRow("/metrics", "200 200 200 200 200 200 200 200 200"),
    ("GET", "/"): HttpRow("/", "200 200 200 200 200 200 200 200 200"),
    ("GET", "/static/{name}"): HttpRow("/static/app.js", "200 200 200 200 200 200 200 200 200"),
    ("POST", "/v1/signup"): HttpRow(
        "/v1/signup",
        "201 201 201 201 201 201 201 201 201",
        {"user_id": "new_{me}", "password": PASSWORD},
    ),
    ("POST", "/v1/login"): HttpRow(
        "/v1/login",
        "200 200 200 200 200 200 200 200 200",
        {"user_id": "stranger", "password": PASSWORD},
    ),
    ("POST", "/v1/logout"): HttpRow("/v1/logout", f"{A} 204 204 204 204 204", fresh_token=True),
    ("GET", "/v1/me"): HttpRow("/v1/me", f"{A} 200 200 200 200 200"),
    ("PATCH", "/v1/me"): HttpRow("/v1/me", f"{A} 200 200 200 200 200", {"display_name": "x"}),
    ("GET", "/v1/users/{user_id}"): HttpRow("/v1/users/owner", f"{A} 200 200 200 200 200"),
    ("GET", "/v1/friends"): HttpRow("/v1/friends", f"{A} 200 200 200 200 200"),
    ("PUT", "/v1/friends/{user_id}"): HttpRow("/v1/friends/stranger", f"{A} 200 200 200 200 200"),
    ("DELETE", "/v1/friends/{user_id}"): HttpRow(
        "/v1/friends/stranger", f"{A} 204 204 204 204 204"
    ),
    ("GET", "/v1/channels"): HttpRow("/v1/channels", f"{A} 200 200 200 200 200"),
    ("GET", "/v1/channels/{channel_id}/messages"): HttpRow(
        "/v1/channels/{G}/messages", f"{A} 403 403 403 200 200"
    ),
    ("GET", "/v1/presence"): HttpRow("/v1/presence?user_id=owner", f"{A} 403 200 403 200 200"),
    ("POST", "/v1/groups"): HttpRow(
        "/v1/groups", f"{A} 201 201 201 201 201", {"name": "mine", "members": []}
    ),
    ("GET", "/v1/groups/{channel_id}"): HttpRow("/v1/groups/{G}", f"{A} 403 403 403 200 200"),
    ("PUT", "/v1/groups/{channel_id}/members/{user_id}"): HttpRow(
        "/v1/groups/{G}/members/candidate", f"{A} 403 403 403 403 200"
    ),
    ("DELETE", "/v1/groups/{channel_id}/members/{user_id}"): HttpRow(
        "/v1/groups/{G}/members/victim", f"{A} 403 403 403 403 204"
    ),
    ("POST", "/v1/push/subscriptions"): HttpRow(
        "/v1/push/subscriptions",
        f"{A} 201 201 201 201 201",
        {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s" * 32},
    ),
    ("DELETE", "/v1/push/subscriptions/{sub_id}"): HttpRow(
        "/v1/push/subscriptions/{sub}", f"{A} 404 404 404 404 204"
    ),
    ("GET", "/v1/push/vapid"): HttpRow("/v1/push/vapid", f"{A} 200 200 200 200 200"),
}

#: Requests whose answer must not depend on whether an id exists, for callers with no right
#: to it: (method, path with a real id, path with a missing one, the two ids).
PROBES = [
    ("GET", "/v1/groups/{G}", "/v1/groups/{M}"),
    ("GET", "/v1/channels/{G}/messages", "/v1/channels/{M}/messages"),
    ("PUT", "/v1/groups/{G}/members/candidate", "/v1/groups/{M}/members/candidate"),
    ("DELETE", "/v1/groups/{G}/members/{me}", "/v1/groups/{M}/members/{me}"),
    ("DELETE", "/v1/push/subscriptions/{sub}", "/v1/push/subscriptions/{missing_sub}"),
    ("GET", "/v1/presence?user_id=victim", "/v1/presence?user_id=ghost_user"),
]
PROBERS = ("outsider", "non_member", "removed")

X = "unauthorized/4001 " * 4  # an error frame, then close 4001; nothing else is answered
#: frame type -> (the frame, one outcome per caller): ``welcome``/``ack``/``history``/``pong``
#: name the reply, ``ok`` is no reply at all, ``forbidden`` an error frame with that code.
FRAMES: dict[str, tuple[dict[str, Any], str]] = {
    "hello": (frames.hello_frame("{token}"), X + "welcome " * 5),
    "send": (
        frames.send_frame("r-{me}", body="hi", channel="{G}"),
        X + "forbidden forbidden forbidden ack ack",
    ),
    "history": (
        frames.history_frame("h-{me}", "{G}"),
        X + "forbidden forbidden forbidden history history",
    ),
    "read": (frames.read_frame("{G}", 1), X + "forbidden forbidden forbidden ok ok"),
    "typing": (frames.typing_frame("{G}"), X + "forbidden forbidden forbidden ok ok"),
    "ping": (frames.ping_frame(), X + "pong " * 5),
}


def route_patterns(server: Server) -> set[tuple[str, str]]:
    """Every (method, pattern) the running server's router serves, patterns written back the
    way chatd/net/api.py adds them (``{name}`` for a captured segment)."""
    found = set()
    for regex, methods in server.app.api.router._routes:
        pattern = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", regex.pattern[1:-1])
        found |= {(method, pattern) for method in methods}
    return found


def frame_types() -> set[str]:
    """Every client frame type: the dataclasses of ``frames.ClientFrame``, by lowercased name,
    each checked to be what ``frames.parse`` makes of that type."""
    return {cls.__name__.lower() for cls in typing.get_args(frames.ClientFrame)}


def test_every_route_and_frame_type_has_a_row(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(make_config(tmp_path / "data")) as server:
            assert route_patterns(server) == set(HTTP)

    trio.run(main)
    assert frame_types() == set(FRAMES)
    for name, (frame, _) in FRAMES.items():
        filled = fill(frame, World(group="g:" + "B" * 16, sub="x", tokens={}), "owner")
        assert type(frames.parse(filled)).__name__.lower() == name
    for _, row in HTTP.items():
        assert len(row.cells.split()) == len(CALLERS)
    for _, (_, cells) in FRAMES.items():
        assert len(cells.split()) == len(CALLERS)


@dataclass
class World:
    group: str
    sub: str
    tokens: dict[str, str]  # caller -> its bearer token ("" for anonymous)


def fill(value: Any, world: World, caller: str) -> Any:
    """``value`` with the placeholders filled in for ``caller``."""
    if isinstance(value, dict):
        return {k: fill(v, world, caller) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, world, caller) for v in value]
    if not isinstance(value, str):
        return value
    return (
        value.replace("{G}", world.group)
        .replace("{M}", MISSING_GROUP)
        .replace("{me}", caller)
        .replace("{sub}", world.sub)
        .replace("{missing_sub}", MISSING_SUB)
        .replace("{token}", world.tokens.get(caller, ""))
    )


async def build_world(server: Server) -> World:
    """The owner's group (member, victim; removed was in it), a message in it, friendships
    (owner with non_member and member), the owner's push subscription, and a token of each
    kind."""
    users = {}
    for name in ("owner", "member", "removed", "non_member", "outsider", "victim"):
        users[name] = await make_user(server, name)
    for name in ("candidate", "stranger"):
        await ChatClient(server.url, name, PASSWORD).signup()
    owner = users["owner"]
    async with HttpClient(server.url, token=owner.token) as http:
        body = {"name": "club", "members": ["member", "removed", "victim"]}
        group = (await http.call("POST", "/v1/groups", body))["channel_id"]
        await http.call("DELETE", f"/v1/groups/{group}/members/removed")
        hook = {"kind": "webhook", "url": "http://127.0.0.1:9/o", "secret": "o" * 32}
        sub = (await http.call("POST", "/v1/push/subscriptions", hook))["id"]
    for friend in ("non_member", "member"):
        for a, b in ((owner, users[friend]), (users[friend], owner)):
            async with HttpClient(server.url, token=a.token) as http:
                await http.call("PUT", f"/v1/friends/{b.user_id}")
    async with owner.session() as s:
        await s.send(channel=group, body="first")
    tokens = {name: client.token or "" for name, client in users.items()}
    tokens["anonymous"] = ""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    tokens["garbage"] = f"member.{secret}"
    expired = f"member.{secret[::-1]}"
    await server.app.store.put_token(token_digest(expired), "member", now_ms() - 1000)
    tokens["expired"] = expired
    quitter = ChatClient(server.url, "member", PASSWORD)
    tokens["revoked"] = await quitter.login()
    async with HttpClient(server.url, token=tokens["revoked"]) as http:
        await http.call("POST", "/v1/logout")
    return World(group=group, sub=sub, tokens=tokens)


async def call(
    server: Server, world: World, caller: str, method: str, path: str, body: Any = None
) -> HttpResponse:
    token = world.tokens[caller] or None
    async with HttpClient(server.url, token=token) as http:
        return await http.request(method, fill(path, world, caller), fill(body, world, caller))


STATUS_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found"}
ERROR_KEYS = ("type", "code", "message", "ref", "retry_after")


async def test_http_matrix(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", push={"allow_private_networks": True})
    async with running(config) as server:
        assert route_patterns(server) == set(HTTP)
        world = await build_world(server)
        failures = []
        for (method, _), row in HTTP.items():
            for caller, want in zip(CALLERS, row.cells.split(), strict=True):
                if row.fresh_token and caller not in BAD_TOKENS:
                    fresh = await ChatClient(server.url, caller, PASSWORD).login()
                    world.tokens[caller], saved = fresh, world.tokens[caller]
                res = await call(server, world, caller, method, row.path, row.body)
                if row.fresh_token and caller not in BAD_TOKENS:
                    world.tokens[caller] = saved
                cell = f"{method} {row.path} as {caller}"
                if res.status != int(want):
                    failures.append(f"{cell}: {res.status} (want {want}) {res.body[:200]!r}")
                elif res.status >= 400:
                    error = res.json()
                    if set(error) != {"error", "message"} or not isinstance(error["message"], str):
                        failures.append(f"{cell}: error body {error!r}")
                    elif error["error"] != STATUS_CODES.get(res.status, error["error"]):
                        failures.append(f"{cell}: code {error['error']!r}")
        assert not failures, "\n".join(failures)


async def test_http_probes_cannot_tell_missing_from_forbidden(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", push={"allow_private_networks": True})
    async with running(config) as server:
        world = await build_world(server)
        for caller in (*PROBERS, "member"):
            for method, real, missing in PROBES:
                if caller == "member" and "push" not in real:
                    continue  # the member may see the group; the subscription is the owner's
                a = await call(server, world, caller, method, real)
                b = await call(server, world, caller, method, missing)
                assert a.status == b.status and a.status in (403, 404), (caller, real, a.body)
                ids = [
                    (world.group, MISSING_GROUP),
                    (world.sub, MISSING_SUB),
                    ("victim", "ghost_user"),
                ]
                ea, eb = a.json(), b.json()
                for x, y in ids:
                    ea["message"] = ea["message"].replace(x, "<id>")
                    eb["message"] = eb["message"].replace(y, "<id>")
                assert ea == eb, (caller, real)
                assert set(ea) == {"error", "message"}


async def ws_outcome(
    port: int, world: World, caller: str, frame: dict[str, Any]
) -> tuple[str, dict[str, Any] | None]:
    """What ``caller`` gets for ``frame`` on a new connection (after its hello, for callers with
    a token; anonymous sends the frame first): the outcome's name and the error frame."""
    raw, head = await RawWs.connect(port)
    assert raw is not None, head
    try:
        if caller != "anonymous" and frame["type"] != "hello":
            await raw.send(frames.hello_frame(world.tokens[caller]))
            if caller not in BAD_TOKENS:
                assert (await raw.recv() or {}).get("type") == "welcome"
        await raw.send(fill(frame, world, caller))
        got = [f for f in await raw.sync() if f["type"] not in ("presence", "synced")]
        if not got and raw.close_code is None and frame["type"] == "send":
            with trio.fail_after(10):  # the ack waits for the commit, which may follow the pong
                while (reply := await raw.recv()) is not None and reply["type"] == "presence":
                    pass
            got = [reply] if reply is not None else []
        for reply in got:
            if reply["type"] == "error":  # the contract's shape, and nothing more
                assert {"type", "code", "message"} <= set(reply) <= {*ERROR_KEYS}, reply
                assert isinstance(reply["message"], str), reply
        if raw.close_code is not None:
            assert len(got) == 1 and got[0]["type"] == "error", got
            return f"{got[0]['code']}/{raw.close_code}", got[0]
        if not got:
            return "ok", None
        assert len(got) == 1, got
        kind = got[0]["type"]
        return (got[0]["code"], got[0]) if kind == "error" else (kind, None)
    finally:
        await raw.aclose()


async def test_frame_matrix(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", push={"allow_private_networks": True})
    async with running(config) as server:
        world = await build_world(server)
        failures = []
        try:
            for kind, (frame, cells) in FRAMES.items():
                for caller, want in zip(CALLERS, cells.split(), strict=True):
                    got, error = await ws_outcome(server.port, world, caller, frame)
                    if got != want:
                        failures.append(f"{kind} as {caller}: {got} {error} (want {want})")
            # Probes: a missing group and a group one is not in are answered alike.
            for caller in PROBERS:
                for kind in ("send", "history", "read", "typing"):
                    frame = FRAMES[kind][0]
                    _, real = await ws_outcome(server.port, world, caller, frame)
                    probe = fill(frame, World(MISSING_GROUP, "", world.tokens), caller)
                    _, missing = await ws_outcome(server.port, world, caller, probe)
                    assert real is not None and missing is not None
                    real["message"] = real["message"].replace(world.group, "<id>")
                    missing["message"] = missing["message"].replace(MISSING_GROUP, "<id>")
                    if real != missing:
                        failures.append(f"{kind} probe as {caller}: {real} vs {missing}")
        finally:
            await close_all()
        assert not failures, "\n".join(failures)
