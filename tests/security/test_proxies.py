"""Client addresses behind a reverse proxy (``server.trusted_proxies``): forwarding headers
count only from trusted peers (rightmost untrusted hop), for rate limits and per-IP caps;
spoofed ones from anyone else are ignored; IPv6 clients are limited per /64."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from chatd.client import HttpClient
from chatd.config import ConfigError, ServerConfig, from_mapping
from chatd.net.proxies import TrustedProxies, limit_key
from tests.conftest import make_config, running

LOOPBACK = ["127.0.0.1/32", "::1/128"]


@pytest.mark.parametrize(
    ("peer", "header", "value", "client"),
    [
        # untrusted peer: whatever it claims, the socket's address
        ("198.51.100.7", "x-forwarded-for", "1.2.3.4", "198.51.100.7"),
        # trusted peer: the rightmost address that is not a trusted proxy
        ("127.0.0.1", "x-forwarded-for", "1.2.3.4", "1.2.3.4"),
        ("127.0.0.1", "x-forwarded-for", "6.6.6.6, 1.2.3.4", "1.2.3.4"),
        ("127.0.0.1", "x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.2.3", "1.2.3.4"),
        ("127.0.0.1", "x-forwarded-for", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # all trusted
        ("127.0.0.1", "x-forwarded-for", "", "127.0.0.1"),  # no header: the proxy itself
        ("127.0.0.1", "x-forwarded-for", "1.2.3.4, bogus", "127.0.0.1"),  # malformed hop
        ("127.0.0.1", "x-forwarded-for", "[2001:db8::1]:443", "2001:db8::1"),
        ("127.0.0.1", "x-forwarded-for", "::ffff:1.2.3.4", "1.2.3.4"),
        (
            "127.0.0.1",
            "forwarded",
            'for=6.6.6.6, for="[2001:db8::5]:80";proto=https',
            "2001:db8::5",
        ),
        ("127.0.0.1", "forwarded", "for=1.2.3.4:5678;by=10.0.0.1", "1.2.3.4"),
        ("127.0.0.1", "forwarded", "for=unknown", "127.0.0.1"),
    ],
)
def test_client_address(peer: str, header: str, value: str, client: str) -> None:
    proxies = TrustedProxies(["127.0.0.1/32", "10.0.0.0/8"], header)
    assert proxies.client(peer, {header: value} if value else {}) == client


def test_the_other_header_is_never_read() -> None:
    xff = TrustedProxies(["127.0.0.1"], "x-forwarded-for")
    assert xff.client("127.0.0.1", {"forwarded": "for=1.2.3.4"}) == "127.0.0.1"
    fwd = TrustedProxies(["127.0.0.1"], "forwarded")
    assert fwd.client("127.0.0.1", {"x-forwarded-for": "1.2.3.4"}) == "127.0.0.1"


def test_limit_keys() -> None:
    assert limit_key("203.0.113.9") == "203.0.113.9"
    assert limit_key("2001:db8:1:2::1") == limit_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") != limit_key("2001:db8:1:2::1")
    assert limit_key("::ffff:203.0.113.9") == "203.0.113.9"


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"trusted_proxies": ["10.0.0.1/8"]}, "server.trusted_proxies"),  # host bits set
        ({"trusted_proxies": ["example.com"]}, "server.trusted_proxies"),
        ({"proxy_header": "x-real-ip"}, "server.proxy_header"),
        ({"allowed_origins": ["https://chat.example.com/"]}, "server.allowed_origins"),
        ({"allowed_origins": ["chat.example.com"]}, "server.allowed_origins"),
        ({"allowed_origins": ["https://chat.example.com/app"]}, "server.allowed_origins"),
        ({"allowed_origins": ["ftp://chat.example.com"]}, "server.allowed_origins"),
        ({"allowed_origins": ["https://Chat.example.com"]}, "server.allowed_origins"),
        ({"allowed_origins": ["https://u:p@chat.example.com"]}, "server.allowed_origins"),
        ({"allowed_origins": ["https://chat.example.com:99999"]}, "server.allowed_origins"),
        ({"allowed_origins": ["*"]}, "server.allowed_origins"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_mapping({"server": values})


def test_good_settings_load() -> None:
    server = from_mapping(
        {
            "server": {
                "trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "fd00::/8"],
                "proxy_header": "Forwarded",
                "allowed_origins": ["https://chat.example.com", "http://[::1]:8080"],
            }
        }
    ).server
    assert server.trusted_proxies == ("127.0.0.1", "10.0.0.0/8", "fd00::/8")
    assert ServerConfig().trusted_proxies == ()


def _config(tmp_path: Path, trusted: list[str], **limits: Any) -> Any:
    return make_config(
        tmp_path / "data",
        server={"trusted_proxies": tuple(trusted)},
        limits={"login_rate": 0.001, "login_burst": 2, **limits},
    )


async def _logins(url: str, forwarded: str) -> int:
    """One login attempt (refused or limited, never a password check) claiming to come from
    ``forwarded``; its status."""
    async with HttpClient(url) as http:
        res = await http.request(
            "POST", "/v1/login", raw=b"{}", headers={"x-forwarded-for": forwarded}
        )
    return res.status


async def test_spoofed_forwarding_headers_from_an_untrusted_peer_are_ignored(
    tmp_path: Path,
) -> None:
    async with running(_config(tmp_path, ["10.0.0.0/8"])) as server:
        # Each attempt claims another address; all count against 127.0.0.1.
        statuses = [await _logins(server.url, f"203.0.113.{i}") for i in range(4)]
        assert statuses == [400, 400, 429, 429]


async def test_a_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    async with running(_config(tmp_path, LOOPBACK)) as server:
        # A client's own X-Forwarded-For prefix is not believed: the proxy's hop is.
        one = [await _logins(server.url, f"6.6.6.{i}, 203.0.113.1") for i in range(3)]
        assert one == [400, 400, 429]
        assert await _logins(server.url, "203.0.113.2") == 400  # another client, its own bucket


async def test_ipv6_clients_are_limited_per_64(tmp_path: Path) -> None:
    async with running(_config(tmp_path, LOOPBACK)) as server:
        same = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:abcd::3"]
        assert [await _logins(server.url, ip) for ip in same] == [400, 400, 429]
        assert await _logins(server.url, "2001:db8:1:3::1") == 400


async def _open(stack: AsyncExitStack, url: str, forwarded: str) -> int:
    """A kept-alive connection whose request claims ``forwarded``; the request's status."""
    http = await stack.enter_async_context(HttpClient(url))
    res = await http.request("GET", "/healthz", headers={"x-forwarded-for": forwarded})
    return res.status


async def test_per_ip_cap_counts_the_forwarded_client(tmp_path: Path) -> None:
    config = _config(tmp_path, LOOPBACK, max_connections_per_ip=2)
    async with running(config) as server, AsyncExitStack() as stack:
        got = [await _open(stack, server.url, "203.0.113.1") for _ in range(3)]
        assert got == [200, 200, 503]
        # Other clients behind the same proxy are not held back by that one.
        assert [await _open(stack, server.url, f"203.0.113.{i}") for i in (2, 3)] == [200, 200]
        # IPv6 neighbours share their /64.
        v6 = [await _open(stack, server.url, f"2001:db8::{i}") for i in (1, 2, 3)]
        assert v6 == [200, 200, 503]


async def test_per_ip_cap_ignores_spoofed_headers(tmp_path: Path) -> None:
    config = _config(tmp_path, [], max_connections_per_ip=2)
    async with running(config) as server, AsyncExitStack() as stack:
        got = [await _open(stack, server.url, f"203.0.113.{i}") for i in range(3)]
        assert got == [200, 200, 503]
