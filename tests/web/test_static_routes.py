"""The web client's files over a real socket: content types, the security headers, strong
ETags and 304, HEAD, and the JSON 404 for a name that is not a file."""

from __future__ import annotations

import hashlib

import pytest

from chatd.net.static import load
from chatd.server import Server
from tests import httpraw
from tests.httpraw import build

ASSETS = load()


async def get(
    port: int, target: str, *headers: tuple[str, str], method: str = "GET", host: str = "x"
) -> httpraw.RawResponse:
    data = build(method, target, list(headers)).replace(
        b"host: x\r\n", f"host: {host}\r\n".encode()
    )
    return await httpraw.request(port, data, method=method)


def directives(response: httpraw.RawResponse) -> dict[str, list[str]]:
    policy = response.header("content-security-policy") or ""
    out = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        out[name] = sources
    return out


async def test_index_is_html_with_a_strict_policy(server: Server) -> None:
    response = await get(server.port, "/", host=f"127.0.0.1:{server.port}")
    assert response.status == 200
    assert response.header("content-type") == "text/html; charset=utf-8"
    assert response.body == ASSETS["index.html"].body
    assert b'<script type="module" src="/static/app.js">' in response.body
    csp = directives(response)
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == [
        "'self'",
        f"ws://127.0.0.1:{server.port}",
        f"wss://127.0.0.1:{server.port}",
    ]
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert response.header("x-content-type-options") == "nosniff"
    assert response.header("referrer-policy") == "no-referrer"
    assert response.header("cache-control") == "no-cache"


async def test_no_inline_script_or_style_in_the_page() -> None:
    """The policy allows none, so the page must need none."""
    page = ASSETS["index.html"].body.decode()
    assert "<style" not in page and " style=" not in page
    assert "<script>" not in page and "javascript:" not in page and " on" not in page.lower()


async def test_a_host_header_that_could_add_a_source_is_left_out(server: Server) -> None:
    response = await get(server.port, "/", host="evil.example 'unsafe-inline'")
    assert response.status == 200
    # this host's own WebSocket origin (the login's ws_url) stays; the Host header adds nothing
    assert directives(response)["connect-src"] == ["'self'", f"ws://127.0.0.1:{server.port}"]


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
        ("sw.js", "text/javascript; charset=utf-8"),
    ],
)
async def test_static_files_have_their_type(server: Server, name: str, content_type: str) -> None:
    response = await get(server.port, f"/static/{name}")
    assert response.status == 200
    assert response.header("content-type") == content_type
    assert response.body == ASSETS[name].body
    assert response.header("x-content-type-options") == "nosniff"


async def test_strong_etag_and_304(server: Server) -> None:
    first = await get(server.port, "/static/app.js")
    etag = first.header("etag")
    assert etag == '"' + hashlib.sha256(first.body).hexdigest()[:32] + '"'  # strong: no W/
    for value in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        again = await get(server.port, "/static/app.js", ("if-none-match", value))
        assert again.status == 304, value
        assert again.body == b"" and again.header("content-length") is None
        assert again.header("etag") == etag
        assert again.header("cache-control") == "no-cache"
    changed = await get(server.port, "/static/app.js", ("if-none-match", '"stale"'))
    assert changed.status == 200 and changed.body == first.body


async def test_head_has_the_get_headers_and_no_body(server: Server) -> None:
    got = await get(server.port, "/")
    head = await get(server.port, "/", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.header("content-length") == str(len(got.body))
    assert head.header("etag") == got.header("etag")
    assert head.header("content-security-policy") == got.header("content-security-policy")


@pytest.mark.parametrize(
    "target",
    ["/static/nope.js", "/static/", "/static/a/app.js", "/static/..%2fapi.py", "/index.html"],
)
async def test_unknown_static_paths_are_json_404(server: Server, target: str) -> None:
    response = await get(server.port, target)
    assert response.status == 404
    assert response.header("content-type") == "application/json"
    assert response.json()["error"] == "not_found"


async def test_only_get_and_head(server: Server) -> None:
    response = await get(server.port, "/static/app.js", method="POST")
    assert response.status == 405
    assert response.header("allow") == "GET, HEAD"
