"""Subscribing: the SSRF guard and the checks of a subscription's fields, on a real server."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chatd.push.guard import public
from tests.conftest import make_config, make_user, running
from tests.push.helpers import SECRET, push_config, subscribe


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def browser_keys() -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {"p256dh": b64url(point), "auth": b64url(os.urandom(16))}


REFUSED_URLS = [
    "http://8.8.8.8/hook",  # http only with private networks allowed
    "ftp://8.8.8.8/hook",
    "https://127.0.0.1/hook",
    "https://127.1.2.3:8443/hook",
    "https://localhost/hook",  # resolves to loopback
    "https://10.1.2.3/hook",
    "https://172.16.0.1/hook",
    "https://192.168.1.1/hook",
    "https://100.64.0.1/hook",  # shared address space (carrier NAT)
    "https://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
    "https://224.0.0.1/hook",
    "https://0.0.0.0/hook",
    "https://240.0.0.1/hook",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",  # v4-mapped loopback
    "https://[::ffff:10.0.0.1]/hook",
    "https://[fe80::1]/hook",
    "https://[fc00::1]/hook",
    "https://[ff02::1]/hook",
    "https://user:pw@8.8.8.8/hook",
    "https://no-such-host.invalid/hook",
    "https:///hook",
    "not a url",
    "",
]


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert public(address)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.0.0.1", "::1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:a00:1::", "::"],
)
def test_non_public_addresses_fail(address: str) -> None:
    assert not public(address)


async def test_refusals_without_private_networks(tmp_path: Path) -> None:
    async with running(
        make_config(tmp_path / "data", storage={"sync": False, "unsafe_fast_commit": True})
    ) as server:
        bob = await make_user(server, "bob")
        for url in REFUSED_URLS:
            status, body = await subscribe(
                server, bob, {"kind": "webhook", "url": url, "secret": SECRET}
            )
            assert (status, body["error"]) == (400, "bad_request"), url
            status, body = await subscribe(
                server, bob, {"kind": "webpush", "endpoint": url, "keys": browser_keys()}
            )
            assert (status, body["error"]) == (400, "bad_request"), url
        # A public address literal needs no network to check: it is accepted.
        status, body = await subscribe(
            server, bob, {"kind": "webhook", "url": "https://8.8.8.8/hook", "secret": SECRET}
        )
        assert status == 201 and body["kind"] == "webhook" and body["id"]
        status, body = await subscribe(
            server,
            bob,
            {"kind": "webpush", "endpoint": "https://[2001:4860::1]/p/1", "keys": browser_keys()},
        )
        assert status == 201 and body["kind"] == "webpush"


BAD_BODIES: list[Any] = [
    {"kind": "sms", "url": "https://8.8.8.8/"},
    {"kind": "webhook", "url": "https://8.8.8.8/"},  # no secret
    {"kind": "webhook", "url": "https://8.8.8.8/", "secret": ""},
    {"kind": "webhook", "url": "https://8.8.8.8/", "secret": 5},
    {"kind": "webpush", "endpoint": "https://8.8.8.8/"},  # no keys
    {"kind": "webpush", "endpoint": "https://8.8.8.8/", "keys": {"p256dh": "AAAA", "auth": "x"}},
    {
        "kind": "webpush",
        "endpoint": "https://8.8.8.8/",
        "keys": {"p256dh": b64url(b"\x04" + b"\x01" * 64), "auth": b64url(os.urandom(16))},
    },  # not a point on the curve
    [1, 2],
]


async def test_bad_subscriptions(tmp_path: Path) -> None:
    async with running(
        make_config(tmp_path / "data", storage={"sync": False, "unsafe_fast_commit": True})
    ) as server:
        bob = await make_user(server, "bob")
        for body in BAD_BODIES:
            status, answer = await subscribe(server, bob, body)
            assert (status, answer["error"]) == (400, "bad_request"), body


async def test_private_networks_allowed_by_config(tmp_path: Path) -> None:
    async with running(push_config(tmp_path / "data", max_subscriptions=3)) as server:
        bob = await make_user(server, "bob")
        for url in ("http://127.0.0.1:9/a", "https://[::ffff:127.0.0.1]:9/b", "http://localhost/c"):
            status, body = await subscribe(
                server, bob, {"kind": "webhook", "url": url, "secret": SECRET}
            )
            assert status == 201, (url, body)
        status, body = await subscribe(
            server, bob, {"kind": "webhook", "url": "http://10.0.0.1/d", "secret": SECRET}
        )
        assert (status, body["error"]) == (400, "bad_request")  # max_subscriptions
        assert "at most 3" in body["message"]
        status, body = await subscribe(
            server, bob, {"kind": "webhook", "url": "ftp://127.0.0.1/", "secret": SECRET}
        )
        assert status == 400  # still only http and https
