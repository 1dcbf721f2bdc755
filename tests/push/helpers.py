"""Shared bits of the push tests: a server config with push toward loopback, subscribing."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import trio

from chatd.client import ChatClient, HttpClient
from chatd.config import Config
from chatd.server import Server
from storage import ReadTx
from tests.conftest import make_config

SECRET = "s3cret-for-the-relay"
#: Push toward the loopback receiver; short retries so a test waits little.
PUSH: dict[str, Any] = {
    "allow_private_networks": True,
    "retry_base": 0.05,
    "retry_max": 0.2,
    "collapse_window": 0.3,
}


def push_config(data: Path, **push: Any) -> Config:
    return make_config(
        data, push={**PUSH, **push}, storage={"sync": False, "unsafe_fast_commit": True}
    )


async def subscribe(server: Server, user: ChatClient, body: dict[str, Any]) -> tuple[int, Any]:
    async with HttpClient(server.url, token=user.token) as http:
        response = await http.request("POST", "/v1/push/subscriptions", body)
    return response.status, response.json()


async def webhook(server: Server, user: ChatClient, url: str, secret: str = SECRET) -> str:
    status, body = await subscribe(server, user, {"kind": "webhook", "url": url, "secret": secret})
    assert status == 201, body
    assert body["kind"] == "webhook"
    return str(body["id"])


def verified(raw: bytes, headers: dict[str, str], secret: str = SECRET) -> dict[str, Any]:
    """The webhook's payload, after checking its signature as a receiver would."""
    want = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-chatd-signature"], want)
    assert headers["content-type"] == "application/json"
    return json.loads(raw)  # type: ignore[no-any-return]


def subscriptions(server: Server, user: str) -> list[str]:
    with server.app.store.env.read() as txn:
        return [sub_id for sub_id, _ in ReadTx(txn).push_subs(user)]


def pending_jobs(server: Server) -> int:
    return len(server.app.store.outbox_pending("push", 1000))


async def until(condition: Any, within: float = 10.0) -> None:
    """Poll ``condition`` (a server counter or storage, which signal nothing) until true."""
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)
