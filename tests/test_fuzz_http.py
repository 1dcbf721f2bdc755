"""Hypothesis fuzzing of the HTTP server: request lines, headers, bodies and chunked framing,
written as raw bytes to one live server.

The server runs in the test's trio loop; hypothesis drives the examples from a worker thread
(``trio.to_thread``) and each example talks to the server through ``trio.from_thread.run``.
After every example: any response is a valid HTTP/1.1 response, no 5xx other than 501, 503 or
505, every JSON error has the contract's shape, ``/healthz`` answers 200 and a message sent
before the fuzzing is still in history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chatd.client import HttpClient
from chatd.server import Server
from tests import httpraw
from tests.conftest import PASSWORD, make_config, make_user, running

EXAMPLES = 150
ALLOWED_5XX = {501, 503, 505}

# -- request lines

METHODS = st.sampled_from(
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PRI"]
) | st.sampled_from(["get", "G\tET", "", "X" * 300, "GET /", "\x00", "HEAD\r\n"])

PATHS = [
    "/healthz",
    "/v1/signup",
    "/v1/login",
    "/v1/me",
    "/v1/users/alice",
    "/v1/users/ALICE",
    "/v1/friends",
    "/v1/friends/bob",
    "/v1/friends/alice",
    "/v1/channels",
    "/v1/channels/dm:alice:bob/messages",
    "/v1/channels/dm:bob:alice/messages",
    "/v1/channels/g:AAAAAAAAAAAA/messages",
    "/v1/presence",
    "/v1/groups",
    "/v1/groups/g:AAAAAAAAAAAA",
    "/v1/groups/g:AAAAAAAAAAAA/members/bob",
    "/v1/ws",
    "/",
    "*",
    "//[",
    "http://[/x",
    "http://x/healthz",
    "/%zz",
    "/%00",
    "/v1/users/%ED%A0%80",
    "/v1/users/%C0%AF",
    "/v1/channels/" + "x" * 3000 + "/messages",
    "/v1/users/" + "a" * 600,
    "/" + "a" * 8000,
    "/v1/channels/%64m:alice:bob/messages",
]

QUERY_VALUES = (
    st.sampled_from(["", "0", "1", "-1", "1e9", "9" * 5000, str(2**63), str(2**63 - 1), "%00"])
    | st.integers(min_value=-(2**70), max_value=2**70).map(str)
    | st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass").hex())
)


@st.composite
def targets(draw: st.DrawFn) -> str:
    path = draw(st.sampled_from(PATHS))
    if draw(st.booleans()):
        names = st.sampled_from(["limit", "before", "after", "user_id", "x", "limit[]", ""])
        pairs = draw(st.lists(st.tuples(names, QUERY_VALUES), max_size=4))
        path += "?" + "&".join(f"{k}={v}" for k, v in pairs)
    return path


VERSIONS = st.sampled_from(
    ["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "HTTP/1", "http/1.1", ""]
)

# -- headers

HEADER_VALUES = st.sampled_from(
    ["", " ", "x", "\x01", "\xff", "a" * 9000, "close", "keep-alive", "Upgrade", "websocket"]
) | st.text(alphabet=st.characters(codec="latin-1"), max_size=30)


@st.composite
def headers(draw: st.DrawFn, token: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if draw(st.integers(0, 9)):
        out.append(("host", draw(st.sampled_from(["x", "127.0.0.1", "", "[", "a b"]))))
    choices = {
        "authorization": st.sampled_from(
            [f"Bearer {token}", f"bearer {token}", "Bearer nope", "Bearer", "Basic eDp5", ""]
        ),
        "origin": st.sampled_from(["http://[", "null", "http://x", "https://[::1", "ftp://x"]),
        "connection": st.sampled_from(["close", "keep-alive", "Upgrade", "upgrade, close"]),
        "upgrade": st.sampled_from(["websocket", "h2c", "WebSocket"]),
        "sec-websocket-key": st.sampled_from(["dGhlIHNhbXBsZSBub25jZQ==", "x", "", "é"]),
        "sec-websocket-version": st.sampled_from(["13", "8", "", "13, 8"]),
        "sec-websocket-protocol": st.sampled_from(["chatd.v1.json", "chatd.v1.msgpack", "x"]),
        "expect": st.sampled_from(["100-continue", "nothing"]),
        "content-type": st.sampled_from(["application/json", "text/plain", ""]),
        "transfer-encoding": st.sampled_from(["gzip", "chunked, gzip", "identity", "Chunked"]),
        "content-length": st.sampled_from(["-1", "abc", "1" * 30, "0", "5, 6", "99999999"]),
    }
    names = draw(st.lists(st.sampled_from(sorted(choices)), max_size=5))
    out += [(name, draw(choices[name])) for name in names]
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(["x-odd", "X Bad", "", "\x00", "x" * 200, "é"]))
        out.append((name, draw(HEADER_VALUES)))
    return out


# -- bodies

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["\ud800", "a\udfff", "\ud83d\ude00", "alice", "bob", "correct horse"])
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = {
    "/v1/signup": ["user_id", "password", "display_name"],
    "/v1/login": ["user_id", "password"],
    "/v1/me": ["display_name"],
    "/v1/groups": ["name", "members"],
    "/v1/groups/g:AAAAAAAAAAAA/members/bob": [],
    "/v1/friends/bob": [],
}
GOOD = {
    "user_id": "fuzzer",
    "password": "correct horse",
    "display_name": "Fuzz",
    "name": "team",
    "members": ["bob"],
}


def dumps(value: Any, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw: st.DrawFn, path: str) -> bytes:
    kind = draw(st.sampled_from(["fields", "fields", "fields", "any", "raw", "none"]))
    if kind == "none":
        return b""
    if kind == "raw":
        return draw(
            st.sampled_from(
                [
                    b"[" * 5000,
                    b'{"a":' * 3000,
                    b"\xff\xfe\x00",
                    b'{"user_id": "\xed\xa0\x80"}',
                    b'{"password": NaN}',
                    b"\xef\xbb\xbf{}",
                    b"1" * 5000,
                    b"{" + b'"k": 1,' * 2000 + b'"k": 2}',
                ]
            )
            | st.binary(max_size=200)
        )
    if kind == "any":
        return dumps(draw(JSON_VALUES), draw(st.booleans()))
    # Type confusion for each field of this route's body (or of a random route's).
    fields = FIELDS.get(path) or draw(st.sampled_from(list(FIELDS.values())))
    body: dict[str, Any] = {}
    for name in fields:
        if draw(st.integers(0, 3)):
            body[name] = draw(st.just(GOOD[name]) | JSON_VALUES)
    return dumps(body, draw(st.booleans()))


@st.composite
def framed(draw: st.DrawFn, body: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and wire bytes for ``body``: Content-Length (right or wrong), or chunked
    (valid or broken)."""
    kind = draw(st.sampled_from(["length", "length", "wrong length", "chunked", "broken"]))
    if kind == "length":
        return ([("content-length", str(len(body)))] if body else []), body
    if kind == "wrong length":
        return [("content-length", str(max(0, len(body) + draw(st.integers(-5, 5)))))], body
    wire = chunked(body, draw)
    if kind == "broken":
        wire = draw(
            st.sampled_from(
                [
                    b"zz\r\n" + wire,
                    wire[: max(0, len(wire) - 3)],
                    wire.replace(b"\r\n", b"\n", 1),
                    b"5\r\nab\r\n0\r\n\r\n",
                    b"1;ext=1\r\nx\r\n0\r\ntrailer: x\r\n\r\n",
                    b"f" * 20 + b"\r\n",
                    b"-1\r\n",
                ]
            )
        )
    return [("transfer-encoding", "chunked")], wire


ROUTES = [
    ("POST", "/v1/signup"),
    ("POST", "/v1/login"),
    ("PATCH", "/v1/me"),
    ("POST", "/v1/groups"),
    ("GET", "/v1/me"),
    ("HEAD", "/v1/me"),
    ("GET", "/v1/users/bob"),
    ("GET", "/v1/friends"),
    ("PUT", "/v1/friends/bob"),
    ("DELETE", "/v1/friends/bob"),
    ("GET", "/v1/channels"),
    ("GET", "/v1/channels/dm:alice:bob/messages"),
    ("HEAD", "/v1/channels/dm:alice:bob/messages"),
    ("GET", "/v1/presence"),
    ("GET", "/v1/groups/g:AAAAAAAAAAAA"),
    ("PUT", "/v1/groups/g:AAAAAAAAAAAA/members/bob"),
    ("GET", "/v1/ws"),
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
]
ODD_PARTS = ["method", "target", "version", "headers", "framing", "line ends"]


@st.composite
def requests(draw: st.DrawFn, token: str) -> tuple[str, bytes, bool]:
    """(method, the request's bytes, whether to half-close after writing). Half the examples
    are well-formed requests to a route (with type-confused bodies and odd query values), the
    others bend one or two parts of the request out of shape."""
    odd = (
        set(draw(st.lists(st.sampled_from(ODD_PARTS), max_size=2)))
        if draw(st.booleans())
        else set()
    )
    method, path = draw(st.sampled_from(ROUTES))
    if "method" in odd:
        method = draw(METHODS)
    target = draw(targets()) if "target" in odd else path + draw(queries())
    version = draw(VERSIONS) if "version" in odd else "HTTP/1.1"
    head = [("host", "x")]
    if draw(st.integers(0, 4)):
        head.append(("authorization", f"Bearer {token}"))
    if path == "/v1/ws" and draw(st.booleans()):
        head += UPGRADE
    if "headers" in odd:
        head += draw(headers(token))
    body = draw(bodies(path))
    if "framing" in odd:
        body_headers, wire = draw(framed(body))
    elif body and draw(st.integers(0, 3)) == 0:
        body_headers, wire = [("transfer-encoding", "chunked")], chunked(body, draw)
    else:
        body_headers, wire = ([("content-length", str(len(body)))] if body else []), body
    lines = [f"{method} {target} {version}".rstrip()]
    lines += [f"{k}: {v}" for k, v in head + body_headers]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + wire
    if "line ends" in odd:
        data = data.replace(b"\r\n", b"\n")
    return method, data, draw(st.integers(0, 9)) > 0


UPGRADE = [
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-version", "13"),
]


@st.composite
def queries(draw: st.DrawFn) -> str:
    names = st.sampled_from(["limit", "before", "after", "user_id", "x"])
    pairs = draw(st.lists(st.tuples(names, QUERY_VALUES | st.just("bob")), max_size=3))
    return ("?" + "&".join(f"{k}={v}" for k, v in pairs)) if pairs else ""


def chunked(body: bytes, draw: st.DrawFn) -> bytes:
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"


# -- checks


def check_response(response: httpraw.RawResponse) -> None:
    assert 100 <= response.status < 600, response
    assert response.status < 500 or response.status in ALLOWED_5XX, response
    if response.status >= 400 and response.body:
        assert response.header("content-type") == "application/json", response
        body = json.loads(response.body)
        assert set(body) - {"retry_after"} == {"error", "message"}, body
        assert isinstance(body["error"], str) and isinstance(body["message"], str), body
        if "retry_after" in body:
            assert isinstance(body["retry_after"], int) and body["retry_after"] > 0, body


async def still_serving(server: Server, token: str, dm: str) -> None:
    response = await httpraw.request(server.port, httpraw.build("GET", "/healthz"))
    assert response.status == 200, response
    async with HttpClient(server.url, token=token) as http:
        page = await http.call("GET", f"/v1/channels/{dm}/messages")
    assert [m["body"] for m in page["messages"]][:1] == ["kept before fuzzing"], page


async def test_fuzz_http_requests_never_break_the_server(data_dir: Path) -> None:
    limits = {"api_rate": 1e6, "api_burst": 1_000_000, "history_rate": 1e6, "history_burst": 10**6}
    # Short timeouts: an example that leaves a request unfinished, or a WebSocket without a
    # hello, costs at most half a second.
    server_cfg = {"header_timeout": 0.5, "keepalive_timeout": 0.2, "hello_timeout": 0.5}
    config = make_config(data_dir, limits=limits, server=server_cfg)
    async with running(config) as server:
        alice = await make_user(server, "alice")
        await make_user(server, "bob")
        async with alice.session() as s:
            await s.send(to="bob", body="kept before fuzzing")
        token, dm = alice.token or "", "dm:alice:bob"
        async with HttpClient(server.url) as http:  # a token of its own for the fuzzer
            login = {"user_id": "alice", "password": PASSWORD}
            fuzz_token = (await http.call("POST", "/v1/login", login))["token"]

        async def one(method: str, data: bytes, half_close: bool) -> None:
            raw = await httpraw.exchange(server.port, data, half_close=half_close)
            for response in httpraw.parse_all(raw, [method]):
                check_response(response)
            await still_serving(server, token, dm)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            # No shrinking: a failing example is reported as generated, within the time box.
            phases=[Phase.explicit, Phase.generate],
        )
        @given(requests(fuzz_token))
        def fuzz(example: tuple[str, bytes, bool]) -> None:
            trio.from_thread.run(one, *example)

        with trio.fail_after(120):
            await trio.to_thread.run_sync(fuzz)
        await still_serving(server, token, dm)
