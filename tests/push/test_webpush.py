"""Web Push end to end: the loopback receiver plays the push service; the test decrypts the
payload with the subscription's private key (RFC 8291, via http_ece) and verifies the VAPID
JWT (RFC 8292) against the key the server publishes."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path

import http_ece
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from chatd.client import ChatClient, HttpClient
from chatd.push.webpush import KEY_FILE
from tests.conftest import PASSWORD, make_user, running
from tests.push.helpers import pending_jobs, push_config, subscribe, until
from tests.push.receiver import Receiver


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_webpush_payload_decrypts_and_vapid_verifies(tmp_path: Path) -> None:
    browser = ec.generate_private_key(ec.SECP256R1())
    point = browser.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    auth = os.urandom(16)
    data = tmp_path / "data"
    async with trio.open_nursery() as nursery:
        service = Receiver(statuses=[201])
        await service.start(nursery)
        async with running(push_config(data, vapid_subject="mailto:ops@example.org")) as server:
            alice = await make_user(server, "alice")
            bob = await make_user(server, "bob")
            async with HttpClient(server.url, token=bob.token) as http:
                public_key = (await http.call("GET", "/v1/push/vapid"))["public_key"]
            endpoint = f"http://127.0.0.1:{service.port}/push/v2/abc"
            status, body = await subscribe(
                server,
                bob,
                {
                    "kind": "webpush",
                    "endpoint": endpoint,
                    "keys": {"p256dh": b64url(point), "auth": b64url(auth)},
                },
            )
            assert status == 201 and body["kind"] == "webpush"
            async with alice.session() as a:
                ack = await a.send(to="bob", body="encrypted hello")
                await service.wait(1)
            request = service.requests[0]
            assert request.path == "/push/v2/abc"
            headers = request.headers
            assert headers["content-encoding"] == "aes128gcm"
            assert 0 < int(headers["ttl"]) <= 24 * 3600
            assert len(headers["topic"]) <= 32
            plain = http_ece.decrypt(
                request.body, private_key=browser, auth_secret=auth, version="aes128gcm"
            )
            assert json.loads(plain) == {
                "user_id": "bob",
                "channel": "dm:alice:bob",
                "msg_id": 1,
                "from": "alice",
                "preview": "encrypted hello",
                "ts": ack["ts"],
                "count": 1,
            }
            # VAPID: "vapid t=<JWT>,k=<key>": the key is the one browsers subscribe with, the
            # signature verifies with it and the claims name this push service.
            scheme, _, params = headers["authorization"].partition(" ")
            parts = dict(p.split("=", 1) for p in params.split(","))
            assert scheme == "vapid" and parts["k"] == public_key
            assert Vapid02.verify(headers["authorization"])
            claims = json.loads(unb64url(parts["t"].split(".")[1]))
            assert claims["aud"] == f"http://127.0.0.1:{service.port}"
            assert claims["sub"] == "mailto:ops@example.org"
            assert time.time() < claims["exp"] <= time.time() + 24 * 3600
            await until(lambda: pending_jobs(server) == 0)  # deleted in a commit of its own
        service.stop()
    key_file = data / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The key is kept: a restart publishes the same one.
    async with running(push_config(data)) as server:
        token = await ChatClient(server.url, "bob", PASSWORD).login()
        async with HttpClient(server.url, token=token) as http:
            assert (await http.call("GET", "/v1/push/vapid"))["public_key"] == public_key
