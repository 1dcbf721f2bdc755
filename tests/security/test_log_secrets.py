"""Secrets never reach the logs, at DEBUG, on the push and cluster paths too (the single-shard
scan of signup, login, sends, admin and drain is tests/ops/test_logs.py).

Push: a webhook (its secret, a capability token in its URL) and a Web Push subscription (its
``auth`` secret and endpoint) for an offline user, deliveries that fail and are retried, then
succeed. Cluster: two shards on a real Redis, a login on the wrong shard, a DM across them,
a logout. The logs are scanned for every password, token (and its random half), body, push
secret and capability URL."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chatd.client import ChatClient, HttpClient, HttpError
from tests.cluster.redis import RedisServer
from tests.cluster.shards import Shards
from tests.ops.proc import ServerProc, write_config
from tests.push.receiver import Receiver

SECRET_PW = "pw-Marmot-Zircon-5512"
SECRET_BODY = "body-Quokka-Basalt-7781"
HOOK_SECRET = "hook-Ibis-Cobalt-3307"
URL_SECRET = "capability-Tapir-Onyx-2290"
PUSH = """
[push]
allow_private_networks = true
retry_base = 0.05
retry_max = 0.2
collapse_window = 0.1
"""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _secrets_of(tokens: list[str]) -> list[str]:
    return [*tokens, *(t.split(".", 1)[1] for t in tokens)]


def _assert_clean(log: str, secrets: list[str]) -> None:
    assert log.strip(), "no log lines at all: the scan would prove nothing"
    for secret in secrets:
        assert secret not in log, f"{secret!r} is in the log"


async def test_push_paths_log_no_secret(tmp_path: Path) -> None:
    config = write_config(tmp_path / "chatd.toml", extra=PUSH)
    auth = os.urandom(16)
    p256dh = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    async with trio.open_nursery() as nursery:
        receiver = Receiver(statuses=[500, 503, 201])  # two failures: retries get logged
        await receiver.start(nursery)
        args = ("--log-format", "json", "--log-level", "DEBUG")
        async with ServerProc(config, tmp_path / "data", *args) as server:
            alice = ChatClient(server.url, "alice", SECRET_PW)
            bob = ChatClient(server.url, "bob", SECRET_PW)
            await alice.signup()
            await bob.signup()
            tokens = [await alice.login(), await bob.login()]
            hook_url = f"http://127.0.0.1:{receiver.port}/hook/{URL_SECRET}"
            endpoint = f"http://127.0.0.1:{receiver.port}/push/{URL_SECRET}-wp"
            async with HttpClient(server.url, token=bob.token) as http:
                await http.call(
                    "POST",
                    "/v1/push/subscriptions",
                    {"kind": "webhook", "url": hook_url, "secret": HOOK_SECRET},
                )
                keys = {"p256dh": _b64(p256dh), "auth": _b64(auth)}
                body = {"kind": "webpush", "endpoint": endpoint, "keys": keys}
                await http.call("POST", "/v1/push/subscriptions", body)
            async with alice.session() as a:
                await a.send(to="bob", body=SECRET_BODY)
            await receiver.wait(2, within=20)  # both delivered, after the failures
            try:
                await ChatClient(server.url, "bob", SECRET_PW + "-wrong").login()
            except HttpError:
                pass
            assert await server.stop() == 0
        receiver.stop()
    secrets = [SECRET_PW, SECRET_BODY, HOOK_SECRET, URL_SECRET, _b64(auth), *_secrets_of(tokens)]
    _assert_clean(server.log(), secrets)


def _users_on_both(shards: Shards) -> tuple[str, str]:
    names = [f"user{i}" for i in range(50)]
    on1 = next(n for n in names if shards.home(n).name == "s1")
    on2 = next(n for n in names if shards.home(n).name == "s2")
    return on1, on2


async def test_cluster_paths_log_no_secret(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    shards = Shards(tmp_path / "cluster", 2, redis.url, log_level="DEBUG")
    try:
        await trio.to_thread.run_sync(shards.start_all)
        u1, u2 = _users_on_both(shards)
        tokens = []
        for user in (u1, u2):
            # Sign up and log in on the other shard than the user's home: forwarded.
            other = "s2" if shards.home(user).name == "s1" else "s1"
            client = ChatClient(shards.url(other), user, SECRET_PW)
            await client.signup()
            tokens.append(await client.login())
        one = ChatClient(shards.url("s1"), u1, SECRET_PW)
        two = ChatClient(shards.url("s2"), u2, SECRET_PW)
        one.token, two.token = tokens
        one.ws_url = shards.url("s1").replace("http://", "ws://") + "/v1/ws"
        two.ws_url = shards.url("s2").replace("http://", "ws://") + "/v1/ws"
        async with one.session() as a, two.session() as b:
            ack = await a.send(to=u2, body=SECRET_BODY)
            with trio.fail_after(20):
                while (frame := await b.next_frame())["type"] != "msg":
                    pass
            assert frame["body"] == SECRET_BODY and frame["msg_id"] == ack["msg_id"]
        async with HttpClient(shards.url("s2"), token=tokens[0]) as http:
            assert (
                await http.request("GET", f"/v1/channels/{ack['channel']}/messages")
            ).status == 200
            assert (await http.request("POST", "/v1/logout")).status == 204
        try:
            await ChatClient(shards.url("s1"), u2, SECRET_PW + "-wrong").login()
        except HttpError:
            pass
    finally:
        await trio.to_thread.run_sync(shards.stop_all)
        redis.stop()
    logs = "".join((tmp_path / "cluster" / f"{n}.log").read_text() for n in ("s1", "s2"))
    cluster_secret = shards.discovery.secret  # X-Chatd-Secret of every peer call
    _assert_clean(logs, [SECRET_PW, SECRET_BODY, cluster_secret, *_secrets_of(tokens)])
