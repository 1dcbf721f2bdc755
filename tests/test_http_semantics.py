"""HTTP details a well-behaved client relies on: Allow on 405, 426 on a plain GET of the
WebSocket endpoint, 100 Continue for ``Expect: 100-continue``."""

from __future__ import annotations

import json

import trio

from chatd.server import Server
from tests import httpraw
from tests.httpraw import build


async def test_405_says_which_methods_the_path_has(server: Server) -> None:
    response = await httpraw.request(server.port, build("DELETE", "/v1/signup"))
    assert response.status == 405 and response.json()["error"] == "method_not_allowed"
    assert response.header("allow") == "POST"
    response = await httpraw.request(server.port, build("POST", "/v1/me"))
    assert response.status == 405
    assert response.header("allow") == "GET, HEAD, PATCH"


async def test_a_plain_get_of_the_websocket_endpoint_is_426(server: Server) -> None:
    response = await httpraw.request(server.port, build("GET", "/v1/ws"))
    assert response.status == 426
    assert response.json()["error"] == "bad_request"
    assert response.header("upgrade") == "websocket"


async def test_expect_100_continue_gets_100_before_the_body(server: Server) -> None:
    body = json.dumps({"user_id": "alice", "password": "correct horse"}).encode()
    head = build(
        "POST",
        "/v1/signup",
        [("expect", "100-continue"), ("content-length", str(len(body)))],
    )
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(head)  # the header block only: the body waits for the 100
            interim = await stream.receive_some(65536)
            assert interim.startswith(b"HTTP/1.1 100 ")
            await stream.send_all(body)
            received = b""
            while chunk := await stream.receive_some(65536):
                received += chunk
    [response] = httpraw.parse_all(received, ["POST"])
    assert response.status == 201
