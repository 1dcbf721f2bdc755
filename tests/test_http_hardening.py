"""No request can take the server down: HEAD, odd request lines and bodies, timeouts on every
request, last-resort handlers, the accept loop, connection caps and per-user rate limits.

Requests are written as raw bytes over loopback sockets (tests/httpraw.py) and every answer is
parsed strictly with h11."""

from __future__ import annotations

from typing import Any

from chatd.client import ChatClient
from chatd.server import Server
from tests import httpraw
from tests.conftest import make_user
from tests.httpraw import RawResponse, build


def assert_error(response: RawResponse, status: int, code: str) -> dict[str, Any]:
    """The contract's error shape: ``status``, JSON ``{error, message}`` (+ ``retry_after``)."""
    assert response.status == status, (response.status, response.body)
    assert response.header("content-type") == "application/json"
    body = response.json()
    assert set(body) - {"retry_after"} == {"error", "message"}, body
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body  # type: ignore[no-any-return]


async def healthy(server: Server) -> None:
    """The server still answers /healthz 200 on a new connection."""
    response = await httpraw.request(server.port, build("GET", "/healthz"))
    assert response.status == 200 and response.json() == {"status": "ok"}


async def user_with_message(server: Server) -> tuple[ChatClient, str]:
    """alice (logged in) and the dm channel holding one message she sent to bob."""
    alice = await make_user(server, "alice")
    await make_user(server, "bob")
    async with alice.session() as s:
        await s.send(to="bob", body="kept")
    return alice, "dm:alice:bob"


# -- HEAD


async def test_head_answers_like_get_without_a_body(server: Server) -> None:
    alice, dm = await user_with_message(server)
    auth = [("authorization", f"Bearer {alice.token}")]
    upgrade = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ]
    cases: list[tuple[str, list[tuple[str, str]], int]] = [
        ("/healthz", [], 200),
        ("/anything", [], 404),
        ("/v1/signup", [], 405),
        ("/v1/me", [], 401),
        ("/v1/me", auth, 200),
        (f"/v1/channels/{dm}/messages?limit=5", auth, 200),
        ("/v1/friends", auth, 200),
        ("/v1/ws", [], 404),
    ]
    for target, headers, status in cases:
        # HEAD then GET pipelined on one keep-alive connection: a body after the HEAD
        # answer would be read as the start of the next response and fail the parse.
        data = build("HEAD", target, headers, close=False) + build("GET", target, headers)
        head, get = httpraw.parse_all(await httpraw.exchange(server.port, data), ["HEAD", "GET"])
        assert head.status == get.status == status, (target, head, get)
        assert head.body == b"" and get.body
        assert head.header("content-length") == str(len(get.body))
        assert head.header("content-type") == get.header("content-type")
    # HEAD is not an upgrade method: 405 with no body, and the server stays up.
    data = build("HEAD", "/v1/ws", upgrade, close=False)
    response = await httpraw.request(server.port, data, method="HEAD", half_close=True)
    assert response.status == 405 and response.body == b""
    await healthy(server)


async def test_curl_dash_i_on_an_unknown_path(server: Server) -> None:
    """What ``curl -I http://127.0.0.1:8080/anything`` sends."""
    data = b"HEAD /anything HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\n"
    data += b"Accept: */*\r\n\r\n"
    raw = await httpraw.exchange(server.port, data, half_close=True)
    (response,) = httpraw.parse_all(raw, ["HEAD"])
    assert response.status == 404 and response.body == b""
    assert int(response.header("content-length") or 0) > 0
    await healthy(server)
