"""The HTTP API over real loopback sockets with a real LMDB in a temp dir (CONTRACT.md)."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing

from chatd.client import HttpClient
from chatd.client.http import HttpResponse
from chatd.server import Server, serve
from tests.conftest import PASSWORD, make_config, running

MiB = 1 << 20


# -- helpers


def assert_error(response: HttpResponse, status: int, code: str) -> dict[str, Any]:
    """``response`` is the contract's error: ``status``, JSON body ``{error, message}`` only
    (plus an integer ``retry_after`` for ``rate_limited``)."""
    assert response.status == status, (response.status, response.body)
    assert response.headers.get("content-type") == "application/json"
    body = response.json()
    expected_keys = {"error", "message"} | ({"retry_after"} if code == "rate_limited" else set())
    assert set(body) == expected_keys, body
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body  # type: ignore[no-any-return]


async def signup(http: HttpClient, user_id: str, **extra: Any) -> HttpResponse:
    return await http.request(
        "POST", "/v1/signup", {"user_id": user_id, "password": PASSWORD, **extra}
    )


async def login(http: HttpClient, user_id: str, password: str = PASSWORD) -> HttpResponse:
    return await http.request("POST", "/v1/login", {"user_id": user_id, "password": password})


async def new_user(http: HttpClient, user_id: str, **extra: Any) -> str:
    """Sign up and log in ``user_id``; its token."""
    assert (await signup(http, user_id, **extra)).status == 201
    response = await login(http, user_id)
    assert response.status == 200
    return response.json()["token"]  # type: ignore[no-any-return]


async def friends_of(http: HttpClient, token: str) -> dict[str, str]:
    response = await http.request("GET", "/v1/friends", token=token)
    assert response.status == 200
    body = response.json()
    assert set(body) == {"friends"}
    return {f["user_id"]: f["state"] for f in body["friends"]}


async def raw_exchange(
    server: Server, data: bytes, *, local_address: str | None = None
) -> HttpResponse:
    """Write ``data`` on a fresh connection while reading until the server closes it (as a
    browser does: a server may answer before it has read everything), and parse the one
    response."""
    received = bytearray()
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(server.host, server.port, local_address=local_address)
        async with stream:

            async def send() -> None:
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                with contextlib.suppress(trio.BrokenResourceError):
                    while chunk := await stream.receive_some(65536):
                        received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpResponse(int(status_line.split()[1]), headers, body)


# -- signup


async def test_signup_returns_201_and_user_id(http: HttpClient) -> None:
    response = await signup(http, "alice")
    assert response.status == 201
    assert response.json() == {"user_id": "alice"}


async def test_signup_display_name_is_kept_and_defaults_to_user_id(http: HttpClient) -> None:
    token_a = await new_user(http, "alice", display_name="  Alice A.  ")
    token_b = await new_user(http, "bob")
    me_a = (await http.request("GET", "/v1/me", token=token_a)).json()
    me_b = (await http.request("GET", "/v1/me", token=token_b)).json()
    assert me_a["display_name"] == "Alice A."
    assert me_b["display_name"] == "bob"


async def test_signup_taken_user_id_is_409_conflict(http: HttpClient) -> None:
    assert (await signup(http, "alice")).status == 201
    assert_error(await signup(http, "alice"), 409, "conflict")
    # The first account's password still works: the conflict changed nothing.
    assert (await login(http, "alice")).status == 200


async def test_signup_malformed_json_is_400(http: HttpClient) -> None:
    for raw in (b"{not json", b"", b"\xff\xfe", b'{"user_id": "alice",'):
        assert_error(await http.request("POST", "/v1/signup", raw=raw), 400, "bad_request")


async def test_signup_non_object_json_is_400(http: HttpClient) -> None:
    for body in ([], ["alice", PASSWORD], "alice", 42, None):
        raw = json.dumps(body).encode()
        assert_error(await http.request("POST", "/v1/signup", raw=raw), 400, "bad_request")


@pytest.mark.parametrize(
    "body",
    [
        {"password": PASSWORD},
        {"user_id": "alice"},
        {"user_id": 42, "password": PASSWORD},
        {"user_id": ["alice"], "password": PASSWORD},
        {"user_id": "alice", "password": 12345678},
        {"user_id": "alice", "password": None},
        {"user_id": "alice", "password": PASSWORD, "display_name": 7},
        {"user_id": "alice", "password": PASSWORD, "display_name": ["x"]},
    ],
)
async def test_signup_missing_or_wrong_types_are_400(http: HttpClient, body: Any) -> None:
    assert_error(await http.request("POST", "/v1/signup", body), 400, "bad_request")


@pytest.mark.parametrize(
    "user_id",
    ["ab", "a" * 33, "Alice", "al-ice", "al ice", "alicé", "al.ice", "", "ali\nce", "../etc"],
)
async def test_signup_bad_user_id_is_400(http: HttpClient, user_id: str) -> None:
    assert_error(await signup(http, user_id), 400, "bad_request")


@pytest.mark.parametrize("user_id", ["abc", "a" * 32, "user_1", "___", "007"])
async def test_signup_user_id_edges_are_accepted(http: HttpClient, user_id: str) -> None:
    response = await signup(http, user_id)
    assert response.status == 201
    assert response.json() == {"user_id": user_id}


@pytest.mark.parametrize("password", ["", "x" * 7, "x" * 1025, "y" * 5000])
async def test_signup_bad_password_length_is_400(http: HttpClient, password: str) -> None:
    response = await http.request("POST", "/v1/signup", {"user_id": "alice", "password": password})
    assert_error(response, 400, "bad_request")


async def test_signup_password_length_edges_are_accepted(http: HttpClient) -> None:
    for user_id, password in (("short_pw", "x" * 8), ("long_pw", "é" * 1024)):
        body = {"user_id": user_id, "password": password}
        assert (await http.request("POST", "/v1/signup", body)).status == 201
        assert (await login(http, user_id, password)).status == 200


@pytest.mark.parametrize("name", ["", "   ", "n" * 65])
async def test_signup_bad_display_name_is_400(http: HttpClient, name: str) -> None:
    assert_error(await signup(http, "alice", display_name=name), 400, "bad_request")
    # Nothing was created: the id is still free.
    assert (await signup(http, "alice")).status == 201


async def test_concurrent_signups_for_one_id_make_one_account(server: Server) -> None:
    statuses: dict[int, int] = {}

    async def attempt(i: int) -> None:
        async with HttpClient(server.url) as http:
            body = {"user_id": "alice", "password": f"password {i}"}
            statuses[i] = (await http.request("POST", "/v1/signup", body)).status

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(attempt, i)
    winners = [i for i, status in statuses.items() if status == 201]
    assert len(winners) == 1
    assert sorted(statuses.values()) == [201] + [409] * 9
    async with HttpClient(server.url) as http:
        for i in range(10):
            response = await login(http, "alice", f"password {i}")
            assert response.status == (200 if i == winners[0] else 401)


# -- login and logout


async def test_login_returns_token_user_and_ws_url(server: Server, http: HttpClient) -> None:
    await signup(http, "alice")
    response = await login(http, "alice")
    assert response.status == 200
    body = response.json()
    assert set(body) == {"token", "user_id", "ws_url", "expires_at"}
    assert body["user_id"] == "alice"
    assert isinstance(body["token"], str) and len(body["token"]) >= 32
    assert body["ws_url"] == f"ws://{server.host}:{server.port}/v1/ws"
    assert isinstance(body["expires_at"], int) and body["expires_at"] > 0
    me = await http.request("GET", "/v1/me", token=body["token"])
    assert me.status == 200 and me.json()["user_id"] == "alice"


async def test_token_expires_at_is_the_configured_ttl(http: HttpClient) -> None:
    await signup(http, "alice")
    before = time.time_ns() // 1_000_000
    expires_at = (await login(http, "alice")).json()["expires_at"]
    after = time.time_ns() // 1_000_000
    ttl = 30 * 86_400_000  # security.token_ttl_days defaults to 30
    assert before + ttl <= expires_at <= after + ttl


async def test_expired_token_is_401(data_dir: Path) -> None:
    # A TTL under a millisecond: the token has expired by the time it is used.
    config = make_config(data_dir, security={"token_ttl_days": 1e-9})
    async with running(config) as server, HttpClient(server.url) as http:
        await signup(http, "alice")
        token = (await login(http, "alice")).json()["token"]
        assert_error(await http.request("GET", "/v1/me", token=token), 401, "unauthorized")


async def test_each_login_gets_its_own_token(http: HttpClient) -> None:
    await signup(http, "alice")
    first = (await login(http, "alice")).json()["token"]
    second = (await login(http, "alice")).json()["token"]
    assert first != second
    for token in (first, second):
        assert (await http.request("GET", "/v1/me", token=token)).status == 200


async def test_login_wrong_password_and_unknown_user_are_the_same_401(http: HttpClient) -> None:
    await signup(http, "alice")
    wrong = assert_error(await login(http, "alice", "not the password"), 401, "unauthorized")
    unknown = assert_error(await login(http, "nobody", PASSWORD), 401, "unauthorized")
    # Same message: the answer does not reveal which user_ids exist.
    assert wrong == unknown


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "alice"},
        {"password": PASSWORD},
        {"user_id": "alice", "password": 12345678},
        {"user_id": "Not Valid", "password": PASSWORD},
        {"user_id": "alice", "password": "x" * 1025},
    ],
)
async def test_login_malformed_body_is_400(http: HttpClient, body: Any) -> None:
    await signup(http, "alice")
    assert_error(await http.request("POST", "/v1/login", body), 400, "bad_request")


async def test_login_non_object_json_is_400(http: HttpClient) -> None:
    for raw in (b"[1, 2]", b"nope", b'"alice"'):
        assert_error(await http.request("POST", "/v1/login", raw=raw), 400, "bad_request")


async def test_logout_revokes_the_token_at_once(http: HttpClient) -> None:
    await signup(http, "alice")
    token = (await login(http, "alice")).json()["token"]
    other = (await login(http, "alice")).json()["token"]
    response = await http.request("POST", "/v1/logout", token=token)
    assert response.status == 204
    assert response.body == b""
    assert_error(await http.request("GET", "/v1/me", token=token), 401, "unauthorized")
    assert_error(await http.request("POST", "/v1/logout", token=token), 401, "unauthorized")
    # Only that token: the user's other login still works.
    assert (await http.request("GET", "/v1/me", token=other)).status == 200


async def test_logout_without_token_is_401(http: HttpClient) -> None:
    assert_error(await http.request("POST", "/v1/logout"), 401, "unauthorized")


# -- authentication


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer"},
        {"authorization": "Bearer not-a-real-token"},
        {"authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
        {"authorization": "garbage"},
    ],
)
async def test_missing_or_bad_token_is_401(http: HttpClient, headers: dict[str, str]) -> None:
    await new_user(http, "alice")
    for method, path in (
        ("GET", "/v1/me"),
        ("PATCH", "/v1/me"),
        ("GET", "/v1/users/alice"),
        ("GET", "/v1/friends"),
        ("PUT", "/v1/friends/alice"),
        ("DELETE", "/v1/friends/alice"),
    ):
        response = await http.request(method, path, headers=headers)
        assert_error(response, 401, "unauthorized")


async def test_bearer_scheme_is_case_insensitive(http: HttpClient) -> None:
    token = await new_user(http, "alice")
    response = await http.request("GET", "/v1/me", headers={"authorization": f"bearer {token}"})
    assert response.status == 200


# -- profiles


async def test_me_returns_the_profile(http: HttpClient) -> None:
    token = await new_user(http, "alice", display_name="Alice")
    response = await http.request("GET", "/v1/me", token=token)
    assert response.status == 200
    body = response.json()
    assert set(body) == {"user_id", "display_name", "created_at"}
    assert body["user_id"] == "alice" and body["display_name"] == "Alice"
    assert isinstance(body["created_at"], int) and body["created_at"] > 1_600_000_000_000


async def test_patch_me_changes_display_name(http: HttpClient) -> None:
    token = await new_user(http, "alice")
    before = (await http.request("GET", "/v1/me", token=token)).json()
    response = await http.request("PATCH", "/v1/me", {"display_name": "Queen A"}, token=token)
    assert response.status == 200
    assert response.json() == {**before, "display_name": "Queen A"}
    assert (await http.request("GET", "/v1/me", token=token)).json()["display_name"] == "Queen A"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"display_name": ""},
        {"display_name": "   "},
        {"display_name": "n" * 65},
        {"display_name": 5},
        {"display_name": None},
        {"display_name": "ok", "user_id": "mallory"},
        {"display_name": "ok", "created_at": 0},
        {"avatar": "x"},
        [],
    ],
)
async def test_patch_me_bad_or_unknown_fields_are_400(http: HttpClient, body: Any) -> None:
    token = await new_user(http, "alice")
    assert_error(await http.request("PATCH", "/v1/me", body, token=token), 400, "bad_request")
    # Nothing changed.
    me = (await http.request("GET", "/v1/me", token=token)).json()
    assert me["user_id"] == "alice" and me["display_name"] == "alice"


async def test_patch_me_malformed_json_is_400(http: HttpClient) -> None:
    token = await new_user(http, "alice")
    response = await http.request("PATCH", "/v1/me", raw=b"{", token=token)
    assert_error(response, 400, "bad_request")


async def test_get_user_returns_public_profile(http: HttpClient) -> None:
    token = await new_user(http, "alice")
    await signup(http, "bob", display_name="Bob B")
    response = await http.request("GET", "/v1/users/bob", token=token)
    assert response.status == 200
    body = response.json()
    assert set(body) == {"user_id", "display_name", "created_at"}
    assert body["user_id"] == "bob" and body["display_name"] == "Bob B"


async def test_get_unknown_user_is_404(http: HttpClient) -> None:
    token = await new_user(http, "alice")
    assert_error(await http.request("GET", "/v1/users/nobody", token=token), 404, "not_found")


@pytest.mark.parametrize("user_id", ["AB", "Alice", "x" * 33, "a%20b", "al-ice"])
async def test_get_user_bad_id_is_400(http: HttpClient, user_id: str) -> None:
    token = await new_user(http, "alice")
    response = await http.request("GET", f"/v1/users/{user_id}", token=token)
    assert_error(response, 400, "bad_request")


# -- friends


async def test_friend_request_then_accept(http: HttpClient) -> None:
    alice = await new_user(http, "alice")
    bob = await new_user(http, "bob")
    assert await friends_of(http, alice) == {}

    response = await http.request("PUT", "/v1/friends/bob", token=alice)
    assert response.status == 200
    assert response.json() == {"user_id": "bob", "state": "requested"}
    assert await friends_of(http, alice) == {"bob": "requested"}
    assert await friends_of(http, bob) == {"alice": "pending"}

    # Asking again changes nothing.
    again = await http.request("PUT", "/v1/friends/bob", token=alice)
    assert again.json() == {"user_id": "bob", "state": "requested"}
    assert await friends_of(http, bob) == {"alice": "pending"}

    response = await http.request("PUT", "/v1/friends/alice", token=bob)
    assert response.status == 200
    assert response.json() == {"user_id": "alice", "state": "friends"}
    assert await friends_of(http, alice) == {"bob": "friends"}
    assert await friends_of(http, bob) == {"alice": "friends"}

    # A PUT between friends is idempotent.
    again = await http.request("PUT", "/v1/friends/bob", token=alice)
    assert again.json() == {"user_id": "bob", "state": "friends"}
    assert await friends_of(http, bob) == {"alice": "friends"}


async def test_friends_list_holds_each_relation(http: HttpClient) -> None:
    alice = await new_user(http, "alice")
    others = {name: await new_user(http, name) for name in ("bob", "carol", "dave")}
    await http.request("PUT", "/v1/friends/bob", token=alice)
    await http.request("PUT", "/v1/friends/carol", token=alice)
    await http.request("PUT", "/v1/friends/alice", token=others["carol"])
    await http.request("PUT", "/v1/friends/alice", token=others["dave"])
    assert await friends_of(http, alice) == {
        "bob": "requested",
        "carol": "friends",
        "dave": "pending",
    }
    assert await friends_of(http, others["dave"]) == {"alice": "requested"}


async def test_befriending_yourself_is_400(http: HttpClient) -> None:
    alice = await new_user(http, "alice")
    assert_error(await http.request("PUT", "/v1/friends/alice", token=alice), 400, "bad_request")
    assert await friends_of(http, alice) == {}


async def test_befriending_unknown_user_is_404(http: HttpClient) -> None:
    alice = await new_user(http, "alice")
    assert_error(await http.request("PUT", "/v1/friends/nobody", token=alice), 404, "not_found")
    assert await friends_of(http, alice) == {}


async def test_befriending_bad_user_id_is_400(http: HttpClient) -> None:
    alice = await new_user(http, "alice")
    for path in ("/v1/friends/BOB", "/v1/friends/b"):
        assert_error(await http.request("PUT", path, token=alice), 400, "bad_request")
        assert_error(await http.request("DELETE", path, token=alice), 400, "bad_request")


@pytest.mark.parametrize("deleter", ["alice", "bob"])
async def test_unfriend_removes_both_sides(http: HttpClient, deleter: str) -> None:
    tokens = {"alice": await new_user(http, "alice"), "bob": await new_user(http, "bob")}
    await http.request("PUT", "/v1/friends/bob", token=tokens["alice"])
    await http.request("PUT", "/v1/friends/alice", token=tokens["bob"])
    other = "bob" if deleter == "alice" else "alice"
    response = await http.request("DELETE", f"/v1/friends/{other}", token=tokens[deleter])
    assert response.status == 204
    assert response.body == b""
    assert await friends_of(http, tokens["alice"]) == {}
    assert await friends_of(http, tokens["bob"]) == {}
    # After an unfriend, a new request starts over at `requested`.
    again = await http.request("PUT", "/v1/friends/bob", token=tokens["alice"])
    assert again.json() == {"user_id": "bob", "state": "requested"}


async def test_unfriend_cancels_a_pending_request(http: HttpClient) -> None:
    alice = await new_user(http, "alice")
    bob = await new_user(http, "bob")
    await http.request("PUT", "/v1/friends/bob", token=alice)
    assert (await http.request("DELETE", "/v1/friends/alice", token=bob)).status == 204
    assert await friends_of(http, alice) == {}
    assert await friends_of(http, bob) == {}


async def test_unfriend_a_stranger_is_204(http: HttpClient) -> None:
    alice = await new_user(http, "alice")
    await signup(http, "bob")
    assert (await http.request("DELETE", "/v1/friends/bob", token=alice)).status == 204
    assert await friends_of(http, alice) == {}


# -- routing and errors


async def test_healthz_is_200(http: HttpClient) -> None:
    response = await http.request("GET", "/healthz")
    assert response.status == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/v1"),
        ("GET", "/v1/"),
        ("GET", "/v1/users"),
        ("GET", "/v1/users/alice/extra"),
        ("POST", "/v1/signup/extra"),
        ("GET", "/v2/me"),
        ("DELETE", "/v1/nothing/here"),
    ],
)
async def test_unknown_route_is_404(http: HttpClient, method: str, path: str) -> None:
    assert_error(await http.request(method, path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/signup"),
        ("PUT", "/v1/signup"),
        ("GET", "/v1/login"),
        ("GET", "/v1/logout"),
        ("DELETE", "/v1/me"),
        ("POST", "/v1/me"),
        ("POST", "/v1/users/alice"),
        ("POST", "/v1/friends"),
        ("GET", "/v1/friends/alice"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method_is_405(http: HttpClient, method: str, path: str) -> None:
    # Checked before authentication: no token needed to learn the method is wrong.
    assert_error(await http.request(method, path), 405, "method_not_allowed")


async def test_query_string_does_not_change_the_route(http: HttpClient) -> None:
    token = await new_user(http, "alice")
    response = await http.request("GET", "/v1/me?x=1&y=2", token=token)
    assert response.status == 200 and response.json()["user_id"] == "alice"


# -- HTTP limits and framing


async def test_keep_alive_serves_many_requests_on_one_connection(server: Server) -> None:
    """A raw h11 client, so a reconnect cannot hide a connection the server closed."""
    with trio.fail_after(10):
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            conn = h11.Connection(h11.CLIENT)
            statuses = []
            for i in range(5):
                body = json.dumps({"user_id": f"user_{i}", "password": PASSWORD}).encode()
                requests = [
                    ("GET", b"/healthz", b""),
                    ("POST", b"/v1/signup", body),
                    ("GET", b"/missing", b""),
                ]
                for method, target, data in requests:
                    headers = [("host", "x"), ("content-length", str(len(data)))]
                    out = conn.send(h11.Request(method=method, target=target, headers=headers))
                    out += conn.send(h11.Data(data=data)) if data else b""
                    out += conn.send(h11.EndOfMessage())
                    await stream.send_all(out)
                    while True:
                        event = conn.next_event()
                        if event is h11.NEED_DATA:
                            conn.receive_data(await stream.receive_some(65536))
                        elif isinstance(event, h11.Response):
                            statuses.append(event.status_code)
                            assert (b"connection", b"close") not in event.headers
                        elif isinstance(event, h11.EndOfMessage):
                            break
                        else:
                            assert isinstance(event, h11.Data), event
                    conn.start_next_cycle()
    assert statuses == [200, 201, 404] * 5


async def test_http_client_reuses_its_connection(http: HttpClient) -> None:
    token = await new_user(http, "alice")
    stream = http._stream
    assert stream is not None
    for _ in range(5):
        assert (await http.request("GET", "/v1/me", token=token)).status == 200
        assert (await http.request("GET", "/nope")).status == 404
    assert http._stream is stream


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    requests = (
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
        b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    with trio.fail_after(10):
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await stream.send_all(requests)
            received = bytearray()
            while chunk := await stream.receive_some(65536):
                received += chunk
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]
    assert statuses == [200, 404, 200]


async def test_body_of_exactly_one_mib_is_accepted(http: HttpClient) -> None:
    prefix = b'{"user_id": "alice", "password": "' + PASSWORD.encode() + b'", "pad": "'
    raw = prefix + b"x" * (MiB - len(prefix) - 2) + b'"}'
    assert len(raw) == MiB
    response = await http.request("POST", "/v1/signup", raw=raw)
    assert response.status == 201


async def test_declared_body_over_one_mib_is_413(server: Server) -> None:
    head = f"POST /v1/signup HTTP/1.1\r\nhost: x\r\ncontent-length: {MiB + 1}\r\n\r\n"
    response = await raw_exchange(server, head.encode())
    assert_error(response, 413, "too_large")
    assert response.headers["connection"] == "close"


async def test_sent_body_over_one_mib_is_413(http: HttpClient) -> None:
    """HttpClient writes the whole request, then reads the answer (like most HTTP libraries)."""
    response = await http.request("POST", "/v1/signup", raw=b"x" * (MiB + 1))
    assert_error(response, 413, "too_large")


async def test_chunked_body_over_one_mib_is_413(server: Server) -> None:
    chunk = b"x" * 65536
    request = b"POST /v1/signup HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    request += b"%x\r\n%s\r\n" % (len(chunk), chunk) * 17 + b"0\r\n\r\n"
    assert_error(await raw_exchange(server, request), 413, "too_large")


async def test_chunked_body_under_the_limit_is_read(server: Server) -> None:
    data = json.dumps({"user_id": "alice", "password": PASSWORD}).encode()
    request = b"POST /v1/signup HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
    request += b"connection: close\r\n\r\n"
    for i in range(0, len(data), 10):  # several chunks
        piece = data[i : i + 10]
        request += b"%x\r\n%s\r\n" % (len(piece), piece)
    response = await raw_exchange(server, request + b"0\r\n\r\n")
    assert response.status == 201
    assert response.json() == {"user_id": "alice"}


@pytest.mark.parametrize(
    "size",
    [
        17 * 1024,
        40 * 1024,
        200 * 1024,
    ],
)
async def test_header_block_over_16_kib_is_431(server: Server, size: int) -> None:
    filler = "x" * size
    request = f"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-filler: {filler}\r\n\r\n"
    response = await raw_exchange(server, request.encode())
    assert_error(response, 431, "too_large")
    assert response.headers["connection"] == "close"


async def test_header_block_under_16_kib_is_accepted(http: HttpClient) -> None:
    response = await http.request("GET", "/healthz", headers={"x-filler": "x" * (15 * 1024)})
    assert response.status == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"\x00\x01\x02\x03\r\n\r\n",
    ],
)
async def test_malformed_http_is_400(server: Server, request_bytes: bytes) -> None:
    response = await raw_exchange(server, request_bytes)
    assert_error(response, 400, "bad_request")
    assert response.headers["connection"] == "close"


async def test_server_survives_a_client_that_hangs_up(server: Server, http: HttpClient) -> None:
    for partial in (
        b"",
        b"GET /heal",
        b"POST /v1/signup HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n{",
    ):
        stream = await trio.open_tcp_stream(server.host, server.port)
        if partial:
            await stream.send_all(partial)
        await stream.aclose()
    assert (await http.request("GET", "/healthz")).status == 200


# -- rate limits


async def test_login_rate_limit_answers_429_with_retry_after(data_dir: Path) -> None:
    config = make_config(data_dir, limits={"login_rate": 0.05, "login_burst": 2})
    async with running(config) as server, HttpClient(server.url) as http:
        await signup(http, "alice")
        assert (await login(http, "alice")).status == 200
        # A failed login spends a token too.
        assert (await login(http, "alice", "wrong password")).status == 401
        response = await login(http, "alice")
        body = assert_error(response, 429, "rate_limited")
        retry_after = body["retry_after"]
        assert isinstance(retry_after, int) and not isinstance(retry_after, bool)
        assert 0 < retry_after <= 20_000
        # Retry-After is the same wait in whole seconds.
        assert abs(int(response.headers["retry-after"]) * 1000 - retry_after) <= 1000
        # Signup has its own bucket.
        assert (await signup(http, "bob")).status == 201


async def test_rate_limits_are_per_client_ip(data_dir: Path) -> None:
    config = make_config(data_dir, limits={"login_rate": 0.05, "login_burst": 1})
    body = json.dumps({"user_id": "alice", "password": PASSWORD}).encode()
    request = b"POST /v1/login HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
    request += b"content-length: %d\r\n\r\n%s" % (len(body), body)
    async with running(config) as server, HttpClient(server.url) as http:
        await signup(http, "alice")
        assert (await raw_exchange(server, request, local_address="127.0.0.1")).status == 200
        limited = await raw_exchange(server, request, local_address="127.0.0.1")
        assert_error(limited, 429, "rate_limited")
        # Another loopback address is another client with its own bucket.
        assert (await raw_exchange(server, request, local_address="127.0.0.2")).status == 200
        assert (await raw_exchange(server, request, local_address="127.0.0.2")).status == 429


async def test_signup_rate_limit_answers_429(data_dir: Path) -> None:
    config = make_config(data_dir, limits={"signup_rate": 0.05, "signup_burst": 1})
    async with running(config) as server, HttpClient(server.url) as http:
        assert (await signup(http, "alice")).status == 201
        response = await signup(http, "bob")
        body = assert_error(response, 429, "rate_limited")
        assert isinstance(body["retry_after"], int) and body["retry_after"] > 0
        assert int(response.headers["retry-after"]) >= 1
        # A rejected signup created nothing; login has its own bucket.
        assert_error(await login(http, "bob"), 401, "unauthorized")
        assert (await login(http, "alice")).status == 200


async def test_login_allowed_again_after_retry_after(
    data_dir: Path, mock_clock: trio.testing.MockClock
) -> None:
    """trio's clock is frozen (MockClock, no autojump) and jumped by hand: no real waiting."""
    config = make_config(data_dir, limits={"login_rate": 0.5, "login_burst": 1})
    async with running(config) as server, HttpClient(server.url) as http:
        await signup(http, "alice")
        assert (await login(http, "alice")).status == 200
        retry_after = assert_error(await login(http, "alice"), 429, "rate_limited")["retry_after"]
        assert 0 < retry_after <= 2000
        mock_clock.jump(retry_after / 2000)
        assert (await login(http, "alice")).status == 429
        mock_clock.jump(retry_after / 1000)
        assert (await login(http, "alice")).status == 200


# -- persistence


async def test_state_survives_a_restart(data_dir: Path) -> None:
    config = make_config(data_dir)
    async with running(config) as server, HttpClient(server.url) as http:
        alice = await new_user(http, "alice", display_name="Alice")
        bob = await new_user(http, "bob")
        carol = await new_user(http, "carol")
        await new_user(http, "dave")
        await http.request("PUT", "/v1/friends/bob", token=alice)
        await http.request("PUT", "/v1/friends/alice", token=bob)
        await http.request("PUT", "/v1/friends/carol", token=alice)
        await http.request("PATCH", "/v1/me", {"display_name": "Bobby"}, token=bob)
        revoked = (await login(http, "carol")).json()["token"]
        assert (await http.request("POST", "/v1/logout", token=revoked)).status == 204
        created_at = (await http.request("GET", "/v1/me", token=alice)).json()["created_at"]

    async with running(config) as server, HttpClient(server.url) as http:
        me = await http.request("GET", "/v1/me", token=alice)
        assert me.status == 200
        assert me.json() == {"user_id": "alice", "display_name": "Alice", "created_at": created_at}
        bob_profile = (await http.request("GET", "/v1/users/bob", token=alice)).json()
        assert bob_profile["display_name"] == "Bobby"
        assert await friends_of(http, alice) == {"bob": "friends", "carol": "requested"}
        assert await friends_of(http, bob) == {"alice": "friends"}
        assert await friends_of(http, carol) == {"alice": "pending"}
        assert_error(await http.request("GET", "/v1/me", token=revoked), 401, "unauthorized")
        assert_error(await signup(http, "dave"), 409, "conflict")
        assert (await login(http, "dave")).status == 200
        assert_error(await login(http, "dave", "wrong password"), 401, "unauthorized")
        # Carol accepts after the restart.
        response = await http.request("PUT", "/v1/friends/alice", token=carol)
        assert response.json() == {"user_id": "alice", "state": "friends"}


# -- concurrency


async def test_200_concurrent_signups_then_logins(server: Server) -> None:
    n = 200
    signups: dict[int, int] = {}
    tokens: dict[int, str] = {}

    async def do_signup(i: int) -> None:
        async with HttpClient(server.url) as http:
            signups[i] = (await signup(http, f"user_{i:03d}")).status

    async def do_login(i: int) -> None:
        async with HttpClient(server.url) as http:
            response = await login(http, f"user_{i:03d}")
            assert response.status == 200, response.body
            tokens[i] = response.json()["token"]

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(do_signup, i)
    assert signups == {i: 201 for i in range(n)}
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(do_login, i)
    assert len(set(tokens.values())) == n
    async with HttpClient(server.url) as http:
        for i in (0, 99, 199):
            me = await http.request("GET", "/v1/me", token=tokens[i])
            assert me.json()["user_id"] == f"user_{i:03d}"


async def test_200_concurrent_requests_past_the_rate_limit_fail_cleanly(data_dir: Path) -> None:
    """With small buckets, exactly ``burst`` requests pass and every other one gets a clean
    429 (the refill, 0.001/s, cannot add a token during the test)."""
    n, signup_burst, login_burst = 200, 20, 10
    limits = {
        "signup_rate": 0.001,
        "signup_burst": signup_burst,
        "login_rate": 0.001,
        "login_burst": login_burst,
    }
    signups: dict[int, HttpResponse] = {}
    logins: dict[int, HttpResponse] = {}
    async with running(make_config(data_dir, limits=limits)) as server:

        async def do_signup(i: int) -> None:
            async with HttpClient(server.url) as http:
                signups[i] = await signup(http, f"user_{i:03d}")

        async def do_login(i: int, user_id: str) -> None:
            async with HttpClient(server.url) as http:
                logins[i] = await login(http, user_id)

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(do_signup, i)
        created = [f"user_{i:03d}" for i, r in signups.items() if r.status == 201]
        assert len(created) == signup_burst
        for response in signups.values():
            if response.status != 201:
                assert_error(response, 429, "rate_limited")

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(do_login, i, created[i % len(created)])
        assert len(logins) == n
        assert sum(r.status == 200 for r in logins.values()) == login_burst
        for response in logins.values():
            if response.status != 200:
                assert_error(response, 429, "rate_limited")
                assert "retry-after" in response.headers


# -- draining


async def test_drain_finishes_in_flight_requests_and_healthz_is_503(data_dir: Path) -> None:
    # An expensive hash on one thread keeps a login in flight while the server drains.
    security = {"argon2_time_cost": 20, "hash_threads": 1}
    config = make_config(data_dir, security=security)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(serve, config)
        async with HttpClient(server.url) as http:
            assert (await signup(http, "alice")).status == 201
        results: dict[str, HttpResponse] = {}

        async def slow_login() -> None:
            async with HttpClient(server.url) as http:
                results["login"] = await login(http, "alice")

        async with HttpClient(server.url) as probe:
            assert (await probe.request("GET", "/healthz")).status == 200  # connection is open
            nursery.start_soon(slow_login)
            with trio.fail_after(10):
                # No event marks "a request is being handled"; poll the server's counter.
                while not server.app.http_busy:  # noqa: ASYNC110
                    await trio.sleep(0.001)
            server.drain()
            await trio.testing.wait_all_tasks_blocked()
            assert server.app.draining
            response = await probe.request("GET", "/healthz")
            assert_error(response, 503, "unavailable")
            assert response.headers.get("connection") == "close"
    assert results["login"].status == 200
    # serve() has returned: nothing listens on the port any more.
    with pytest.raises(OSError):
        await trio.open_tcp_stream(server.host, server.port)
