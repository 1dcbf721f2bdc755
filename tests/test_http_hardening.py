"""No request can take the server down: HEAD, odd request lines and bodies, timeouts on every
request, last-resort handlers, the accept loop, connection caps and per-user rate limits.

Requests are written as raw bytes over loopback sockets (tests/httpraw.py) and every answer is
parsed strictly with h11."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
import trio.testing

import chatd.net.listener
from chatd.client import ChatClient, HttpClient
from chatd.net.heartbeat import set_keepalive
from chatd.net.http import HttpConnection
from chatd.net.routing import Request, Response
from chatd.server import Server
from tests import httpraw
from tests.conftest import make_config, make_user, running
from tests.httpraw import RawResponse, build
from tests.test_ws_errors import wait_for
from tests.wsraw import RawWs


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
        ("/v1/ws", [], 426),
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


# -- odd request lines, headers and bodies


@pytest.mark.parametrize("target", ["//[", "http://[/x", "//[::1/healthz", "/x?a=1#[", "//]"])
async def test_target_urlsplit_rejects_is_400(server: Server, target: str) -> None:
    response = await httpraw.request(server.port, build("GET", target))
    if target.endswith("]") or target.endswith("#["):
        assert response.status in (400, 404)  # urlsplit may take these: any clean answer
    else:
        assert_error(response, 400, "bad_request")
    await healthy(server)


@pytest.mark.parametrize("origin", ["http://[", "https://[::1", "http://[zz]:80", "http://a:b:c"])
async def test_malformed_origin_on_upgrade_is_403(server: Server, origin: str) -> None:
    headers = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
        ("origin", origin),
    ]
    data = build("GET", "/v1/ws", headers, close=False)
    response = await httpraw.request(server.port, data, half_close=True)
    assert_error(response, 403, "forbidden")
    await healthy(server)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b"{" + b'"a":{' * 50_000,
        b'{"user_id": ' + b"[" * 100_000 + b"]" * 100_000 + b', "password": "x"}',
        b'{"user_id": "alice", "password": "correct horse", "x": '
        + b'{"a":' * 30_000
        + b"1"
        + b"}" * 30_000
        + b"}",
    ],
)
async def test_deeply_nested_json_is_400(server: Server, raw: bytes) -> None:
    response = await httpraw.request(server.port, build("POST", "/v1/signup", body=raw))
    assert_error(response, 400, "bad_request")
    await healthy(server)


LONE = ["\\ud800", "\\udfff", "a\\udc00b", "\\ud83d", "\\ude00x"]


def surrogate_bodies() -> list[tuple[str, str, str]]:
    """(method, path, JSON text) with a lone surrogate escape in one string, for every JSON
    string field of every body; ``S`` marks the spot."""
    return [
        ("POST", "/v1/signup", '{"user_id": "carol", "password": "S"}'),
        ("POST", "/v1/signup", '{"user_id": "carol", "password": "correct horse S"}'),
        (
            "POST",
            "/v1/signup",
            '{"user_id": "carol", "password": "correct horse", "display_name": "S"}',
        ),
        ("POST", "/v1/signup", '{"user_id": "S", "password": "correct horse"}'),
        ("POST", "/v1/signup", '{"S": 1, "user_id": "carol", "password": "correct horse"}'),
        ("POST", "/v1/login", '{"user_id": "alice", "password": "S"}'),
        ("POST", "/v1/login", '{"user_id": "alice", "password": "correct horse", "x": ["S"]}'),
        ("PATCH", "/v1/me", '{"display_name": "S"}'),
        ("POST", "/v1/groups", '{"name": "S", "members": ["bob"]}'),
        ("POST", "/v1/groups", '{"name": "ok", "members": ["bob", "S"]}'),
        ("POST", "/v1/groups", '{"name": "ok", "members": [{"S": "S"}]}'),
    ]


async def test_lone_surrogates_in_any_json_string_are_400(server: Server) -> None:
    alice, _ = await user_with_message(server)
    auth = [("authorization", f"Bearer {alice.token}")]
    for method, path, template in surrogate_bodies():
        for lone in LONE:
            body = template.replace("S", lone).encode()
            data = build(method, path, auth, body)
            response = await httpraw.request(server.port, data)
            message = assert_error(response, 400, "bad_request")["message"]
            assert "surrogate" in message, (path, template, message)
    # Nothing was created and every account still works.
    async with HttpClient(server.url) as http:
        response = await http.request("GET", "/v1/users/carol", token=alice.token)
        assert response.status == 404
        me = await http.call("GET", "/v1/me", token=alice.token)
        assert me["display_name"] == "alice"
        # A surrogate *pair* is one valid character and is accepted.
        pair = b'{"display_name": "smile \\ud83d\\ude00"}'
        response = await http.request("PATCH", "/v1/me", raw=pair, token=alice.token)
        assert response.status == 200 and response.json()["display_name"] == "smile \U0001f600"
    await healthy(server)


@pytest.mark.parametrize("name", ["limit", "before", "after"])
@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("9" * 5000, 400),
        ("1" + "0" * 4299, 400),
        (str(2**63), 400),
        (str(2**64 + 1), 400),
        (str(2**63 - 1), 200),
        ("0" * 30 + "7", 200),
        ("0" * 5000 + "7", 200),
        ("-1", 400),
        ("1e3", 400),
        ("\u0661", 400),
    ],
)
async def test_huge_history_query_values_are_400(
    server: Server, name: str, value: str, status: int
) -> None:
    alice = await make_user(server, "alice")
    await make_user(server, "bob")
    async with HttpClient(server.url, token=alice.token) as http:
        path = f"/v1/channels/dm:alice:bob/messages?{name}={quote(value)}"
        response = await http.request("GET", path)
    assert response.status == status, (response.status, response.body)
    if status == 400:
        assert response.json()["error"] == "bad_request"
        assert name in response.json()["message"]


@pytest.mark.parametrize(
    "te",
    [
        ["gzip"],
        ["gzip, chunked"],
        ["chunked, gzip"],
        ["identity"],
        ["deflate"],
        ["chunked", "chunked"],
        ["gzip", "chunked"],
    ],
)
async def test_transfer_encodings_other_than_chunked_are_501(server: Server, te: list[str]) -> None:
    headers = [("transfer-encoding", v) for v in te]
    data = build("POST", "/v1/signup", headers) + b"5\r\nhello\r\n0\r\n\r\n"
    response = await httpraw.request(server.port, data)
    assert_error(response, 501, "not_implemented")
    assert response.header("connection") == "close"
    await healthy(server)


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0", "HTTP/9.9"])
async def test_http_versions_other_than_1_0_and_1_1_are_505(server: Server, version: str) -> None:
    data = f"GET /healthz {version}\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
    response = await httpraw.request(server.port, data)
    assert_error(response, 505, "http_version_not_supported")
    assert response.header("connection") == "close"
    await healthy(server)


async def test_http_1_0_is_served(server: Server) -> None:
    response = await httpraw.request(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert response.status == 200


# -- timeouts on every request of a keep-alive connection (virtual time)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Virtual time jumps once the loop has idled 10 real ms (loopback I/O finishes first).
    return trio.testing.MockClock(autojump_threshold=0.01)


async def drip(stream: trio.SocketStream, data: bytes, every: float) -> float | None:
    """Write ``data`` one byte every ``every`` seconds while reading; the virtual time the
    server closed the connection, measured from the first byte (None if it never did)."""
    closed: list[float] = []
    start = trio.current_time()

    async def read() -> None:
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        closed.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        for byte in data:
            try:
                await stream.send_all(bytes([byte]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            await trio.sleep(every)
            if closed:
                break
        if not closed:
            nursery.cancel_scope.cancel()
    return closed[0] if closed else None


async def keepalive_stream(server: Server) -> trio.SocketStream:
    """A connection that has had one request answered and is idle, kept alive."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(build("GET", "/healthz", close=False))
    raw = b""
    while b'"ok"}' not in raw:
        raw += await stream.receive_some(65536)
    (response,) = httpraw.parse_all(raw, ["GET"])
    assert response.status == 200
    return stream


SLOW_REQUEST = build("GET", "/healthz") * 2  # 70+ bytes: minutes at one byte per 3 s


async def test_header_timeout_applies_to_the_second_request(
    data_dir: Path, clock: trio.testing.MockClock
) -> None:
    config = make_config(data_dir, server={"header_timeout": 10.0, "keepalive_timeout": 60.0})
    async with running(config) as server:
        stream = await keepalive_stream(server)
        async with stream:
            closed_after = await drip(stream, SLOW_REQUEST, every=3.0)
        assert closed_after is not None and 9.0 <= closed_after <= 13.5, closed_after
        await healthy(server)


async def test_header_timeout_applies_to_the_first_request(
    data_dir: Path, clock: trio.testing.MockClock
) -> None:
    config = make_config(data_dir, server={"header_timeout": 10.0, "keepalive_timeout": 60.0})
    async with running(config) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            closed_after = await drip(stream, SLOW_REQUEST, every=3.0)
        assert closed_after is not None and 9.0 <= closed_after <= 13.5, closed_after


async def test_idle_keepalive_waits_keepalive_timeout_not_header_timeout(
    data_dir: Path, clock: trio.testing.MockClock
) -> None:
    config = make_config(data_dir, server={"header_timeout": 10.0, "keepalive_timeout": 60.0})
    async with running(config) as server:
        stream = await keepalive_stream(server)
        async with stream:
            await trio.sleep(45)  # idle longer than header_timeout, within keepalive_timeout
            await stream.send_all(build("GET", "/healthz"))
            raw = b""
            while chunk := await stream.receive_some(65536):
                raw += chunk
        assert [r.status for r in httpraw.parse_all(raw, ["GET"])] == [200]
        # Idle past keepalive_timeout: closed without a word.
        stream = await keepalive_stream(server)
        async with stream:
            start = trio.current_time()
            assert await stream.receive_some(65536) == b""
            assert 59.0 <= trio.current_time() - start <= 62.0


# -- last-resort handlers and the accept loop


async def boom_read(self: HttpConnection) -> Request | None:
    request = await ORIGINAL_READ(self)
    if request is not None and request.path == "/boom":
        raise RuntimeError("injected fault while parsing")
    return request


ORIGINAL_READ = HttpConnection._read_request


def inject(server: Server, stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one stage of serving a connection, hit only by requests for /boom."""
    if stage == "parse":
        monkeypatch.setattr(HttpConnection, "_read_request", boom_read)
        return
    dispatch = server.app.api.dispatch

    async def broken(request: Request) -> Response:
        if request.path != "/boom":
            return await dispatch(request)
        if stage == "route":
            raise RuntimeError("injected fault while routing")
        return Response(200, {"not json": {1, 2}})  # "respond": json.dumps fails

    monkeypatch.setattr(server.app.api, "dispatch", broken)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("stage", ["parse", "route", "respond"])
async def test_a_bug_in_one_connection_is_a_500_for_it_alone(
    server: Server, stage: str, method: str, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    inject(server, stage, monkeypatch)
    bystander = await keepalive_stream(server)  # a connection open across the fault
    async with bystander:
        with caplog.at_level("ERROR"):
            local = "127.0.0.3"
            data = build(method, "/boom", close=False)
            raw = await httpraw.exchange(server.port, data, local_address=local)
        (response,) = httpraw.parse_all(raw, [method])
        assert response.status == 500 and response.header("connection") == "close"
        if method == "GET":
            assert response.json() == {"error": "internal", "message": "internal server error"}
        else:
            assert response.body == b""
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert local in errors[0].getMessage() and errors[0].exc_info is not None
        # The bystander and new connections are served as before.
        await bystander.send_all(build("GET", "/healthz"))
        raw = b""
        while chunk := await bystander.receive_some(65536):
            raw += chunk
        assert [r.status for r in httpraw.parse_all(raw, ["GET"])] == [200]
        await healthy(server)


class FlakyListener(socket.socket):
    """A real listening socket whose accept() first fails with each of ``errnos`` in turn,
    as accept(2) does for a connection reset before it was accepted, a firewall refusal, or
    a process out of file descriptors."""

    errnos: list[int] = []

    def accept(self) -> tuple[socket.socket, Any]:
        if FlakyListener.errnos:
            code = FlakyListener.errnos.pop(0)
            raise OSError(code, os.strerror(code))
        return super().accept()


ACCEPT_ERRNOS = [
    errno.ECONNABORTED,
    errno.EPROTO,
    errno.EPERM,
    errno.ENETDOWN,
    errno.ENOPROTOOPT,
    errno.EHOSTDOWN,
    errno.ENONET,
    errno.EHOSTUNREACH,
    errno.EOPNOTSUPP,
    errno.ENETUNREACH,
    errno.ECONNRESET,
    errno.ETIMEDOUT,
    errno.EMFILE,
    errno.ENFILE,
    errno.ENOMEM,
    errno.ENOBUFS,
]


async def test_accept_errors_are_retried_or_backed_off(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def flaky_listen(host: str, port: int) -> socket.socket:
        sock = FlakyListener(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        return sock

    monkeypatch.setattr(chatd.net.listener, "open_listener", flaky_listen)
    async with running(make_config(data_dir)) as server:
        for code in ACCEPT_ERRNOS:
            FlakyListener.errnos = [code]
            await healthy(server)  # the pending connection is accepted on a retry
            assert FlakyListener.errnos == []
        # Several failures queued while connections wait in the backlog.
        FlakyListener.errnos = ACCEPT_ERRNOS[:8]
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(healthy, server)


async def test_setsockopt_failure_closes_that_socket_only(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail = [errno.EINVAL, errno.ECONNRESET]

    def flaky_keepalive(sock: socket.socket, cfg: Any) -> None:
        if fail:
            code = fail.pop(0)
            raise OSError(code, os.strerror(code))
        set_keepalive(sock, cfg)

    monkeypatch.setattr(chatd.net.listener, "set_keepalive", flaky_keepalive)
    for _ in range(2):  # the socket is closed at once, without a response
        assert await httpraw.exchange(server.port, build("GET", "/healthz")) == b""
    await healthy(server)
    await wait_for(lambda: server.app.open_connections == 0)


async def test_connections_reset_at_once_do_not_disturb_others(server: Server) -> None:
    statuses: list[int] = []

    async def resetters() -> None:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", server.port))
            httpraw.reset(sock)
            await trio.lowlevel.checkpoint()

    async def client() -> None:
        async with HttpClient(server.url) as http:
            for _ in range(50):
                statuses.append((await http.request("GET", "/healthz")).status)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(resetters)
        nursery.start_soon(client)
    assert statuses == [200] * 50
    await wait_for(lambda: server.app.open_connections == 0)


@pytest.mark.parametrize("listen", ["256.1.1.1:0", "192.0.2.1:0"])
def test_start_up_failures_exit_1_with_one_line(tmp_path: Path, listen: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "serve", "--listen", listen, "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chatd: cannot start: "), result.stderr


# -- connection caps


async def read_all(stream: trio.SocketStream) -> bytes:
    raw = b""
    try:
        while chunk := await stream.receive_some(65536):
            raw += chunk
    except trio.BrokenResourceError:
        pass
    return raw


async def test_max_connections_is_exact_under_a_burst(data_dir: Path) -> None:
    async with running(make_config(data_dir, server={"max_connections": 5})) as server:
        # 20 connections complete their TCP handshake in the backlog before the server runs
        # again: it then accepts them in one go.
        socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        streams = [trio.SocketStream(trio.socket.from_stdlib_socket(s)) for s in socks]
        answers: dict[int, bytes] = {}

        async def ask(i: int) -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                await streams[i].send_all(build("GET", "/healthz", close=False))
            raw = b""
            with contextlib.suppress(trio.BrokenResourceError):
                while b'"ok"}' not in raw and (chunk := await streams[i].receive_some(65536)):
                    raw += chunk
            answers[i] = raw

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(ask, i)
        served = [i for i, raw in answers.items() if raw]
        assert len(served) == 5, answers
        for i in served:
            assert [r.status for r in httpraw.parse_all(answers[i], ["GET"])] == [200]
        assert server.app.open_connections == 5
        assert server.app.refused_connections == 15
        for stream in streams:
            await stream.aclose()
        await wait_for(lambda: server.app.open_connections == 0)
        await healthy(server)


UPGRADE = [
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-version", "13"),
]


async def test_connections_per_ip_over_the_cap_get_503(data_dir: Path) -> None:
    config = make_config(data_dir, limits={"max_connections_per_ip": 3})
    async with running(config) as server:
        held = [await keepalive_stream(server) for _ in range(2)]
        ws, _ = await RawWs.connect(server.port)  # a WebSocket counts too
        assert ws is not None
        assert server.app.connections.from_ip("127.0.0.1") == 3
        # Over the cap: plain requests and upgrades alike get 503 with Retry-After.
        for method, data in (
            ("GET", build("GET", "/healthz")),
            ("HEAD", build("HEAD", "/healthz")),
            ("GET", build("GET", "/v1/ws", UPGRADE, close=False)),
        ):
            raw = await httpraw.exchange(server.port, data, half_close=True)
            (response,) = httpraw.parse_all(raw, [method])
            assert response.status == 503
            assert int(response.header("retry-after") or 0) >= 1
            assert response.header("connection") == "close"
            if method == "GET":
                assert_error(response, 503, "unavailable")
        # Another address is not affected.
        other = await httpraw.request(
            server.port, build("GET", "/healthz"), local_address="127.0.0.2"
        )
        assert other.status == 200
        # A connection that ends gives its place back, WebSocket or HTTP.
        await ws.aclose()
        await wait_for(lambda: server.app.connections.from_ip("127.0.0.1") == 2)
        await healthy(server)
        for stream in held:
            await stream.aclose()
        await wait_for(lambda: server.app.open_connections == 0)


async def test_connections_per_ip_far_over_the_cap_are_closed_at_accept(data_dir: Path) -> None:
    config = make_config(data_dir, limits={"max_connections_per_ip": 2})
    async with running(config) as server:
        streams = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(2 + 16)]
        await wait_for(lambda: server.app.open_connections == 18)
        dropped = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with dropped:
            await dropped.send_all(build("GET", "/healthz"))
            assert await read_all(dropped) == b""
        assert server.app.refused_connections == 1
        for stream in streams:
            await stream.aclose()
        await wait_for(lambda: server.app.open_connections == 0)
        await healthy(server)


# -- per-user rate limit on authenticated calls


async def test_authenticated_calls_are_rate_limited_per_user(
    data_dir: Path, clock: trio.testing.MockClock
) -> None:
    config = make_config(data_dir, limits={"api_rate": 0.5, "api_burst": 3})
    async with running(config) as server:
        alice = await make_user(server, "alice")
        bob = await make_user(server, "bob")
        async with HttpClient(server.url, token=alice.token) as http:
            for _ in range(3):
                assert (await http.request("GET", "/v1/me")).status == 200
            for method, path in (
                ("GET", "/v1/me"),
                ("HEAD", "/v1/friends"),
                ("PUT", "/v1/friends/bob"),
            ):
                response = await http.request(method, path)
                assert response.status == 429, (method, path, response.status)
                assert int(response.headers["retry-after"]) == 2
                if method != "HEAD":
                    body = response.json()
                    assert body["error"] == "rate_limited"
                    assert 1000 < body["retry_after"] <= 2000
            # Other users, unauthenticated routes and bad tokens are not held back.
            bob_me = await http.request("GET", "/v1/me", token=bob.token)
            assert bob_me.status == 200
            assert (await http.request("GET", "/healthz", token="")).status == 200
            assert (await http.request("GET", "/v1/me", token="nope")).status == 401
            await trio.sleep(2.0)
            assert (await http.request("GET", "/v1/me")).status == 200
            assert (await http.request("GET", "/v1/me")).status == 429


# -- gc.freeze only at a quiet point


async def test_no_gc_freeze_while_requests_are_in_progress(server: Server) -> None:
    """Objects alive when gc.freeze() runs are never collected as cycles again: it must not
    run while a request is half read (its h11 state, buffers) or a handler is running."""
    frozen = gc.get_freeze_count()
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as pending:
        await pending.send_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")  # header block unfinished
        for _ in range(1100):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            sock.close()
            await trio.lowlevel.checkpoint()
        await wait_for(lambda: server.app.open_connections == 1)
        assert gc.get_freeze_count() <= frozen  # frozen objects may be freed, none added
        await pending.send_all(b"\r\n")
        raw = b""
        while b'"ok"}' not in raw:
            raw += await pending.receive_some(65536)


async def test_a_client_that_stops_reading_is_closed_after_keepalive_timeout(
    data_dir: Path, clock: trio.testing.MockClock
) -> None:
    """Pipelined requests whose answers the client never reads: once the socket buffers are
    full the server waits for the client to take the answer, at most keepalive_timeout."""
    limits = {"history_rate": 1e6, "history_burst": 10**6, "max_body_chars": 200_000}
    async with running(make_config(data_dir, limits=limits)) as server:
        alice, dm = await user_with_message(server)
        async with alice.session() as s:
            for _ in range(6):
                await s.send(to="bob", body="x" * 100_000)
        request = build(
            "GET",
            f"/v1/channels/{dm}/messages",
            [("authorization", f"Bearer {alice.token}")],
            close=False,
        )
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stalled:
            stalled.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await stalled.send_all(request * 60)  # ~30 MB of answers, none read
            await trio.sleep(30)
            assert server.app.open_connections == 1  # still waiting for the client
            await trio.sleep(40)
            assert server.app.open_connections == 0
        await healthy(server)
