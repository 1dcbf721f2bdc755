"""chatd under a test that acts as systemd: READY=1, WATCHDOG=1 pings, STATUS= lines; 200
WebSockets; SIGTERM drains (STOPPING=1, /healthz 503 on a kept-alive connection, every
WebSocket closed 1001 in slices spread over the window, exit 0); every acked message is
there after a restart; /metrics parses with prometheus_client and its counters move."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, open_websocket_url

from chatd.client import ChatClient, HttpClient
from tests.ops.cli import replay
from tests.ops.proc import ServerProc, write_config

PASSWORD = "correct horse battery"
CLIENTS = 200
USERS = 10  # 20 devices each (max_sessions_per_user = 50 in the test config)
DRAIN = 4.0


class FakeSystemd:
    """The notify socket: a unix datagram socket the test reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.messages: list[dict[str, str]] = []
        self.changed = trio.Condition()

    async def bind(self) -> None:
        await self.sock.bind(str(self.path))

    async def run(self) -> None:
        while True:
            data = await self.sock.recv(4096)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            async with self.changed:
                self.messages.append(fields)
                self.changed.notify_all()

    async def wait_for(self, key: str, after: int = 0) -> int:
        """Index of the first message from ``after`` on that has ``key``."""
        async with self.changed:
            while True:
                for i in range(after, len(self.messages)):
                    if key in self.messages[i]:
                        return i
                await self.changed.wait()


def metrics(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


async def hold(
    url: str, token: str, closes: list[tuple[int | None, float]], up: trio.Event, ready: list[int]
) -> None:
    """One raw device: hello, welcome, then wait for the server's close."""
    async with open_websocket_url(url) as ws:
        await ws.send_message(json.dumps({"type": "hello", "token": token}))
        assert json.loads(await ws.get_message())["type"] == "welcome"
        ready.append(1)
        if len(ready) == CLIENTS:
            up.set()
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason else None
            closes.append((code, trio.current_time()))
        finally:
            await ws._stream.aclose()  # trio-websocket leaves it open when the server closes


async def test_systemd_notify_drain_and_restart(tmp_path: Path) -> None:
    config = write_config(tmp_path / "chatd.toml", drain=DRAIN)
    data = tmp_path / "data"
    systemd = FakeSystemd(tmp_path / "notify.sock")
    await systemd.bind()
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"}
    acked: list[dict] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(systemd.run)
        async with ServerProc(config, data, env=env) as server:
            ready = await systemd.wait_for("READY")
            assert "connections" in systemd.messages[ready]["STATUS"]
            ping = await systemd.wait_for("WATCHDOG", ready)
            await systemd.wait_for("WATCHDOG", ping + 1)  # pings keep coming

            names = [f"user{i}" for i in range(USERS)]
            clients = [ChatClient(server.url, n, PASSWORD) for n in names]
            for c in clients:
                await c.signup()
                await c.login()
            closes: list[tuple[int | None, float]] = []
            up, ready_list = trio.Event(), []
            ws_url = server.url.replace("http", "ws") + "/v1/ws"
            async with trio.open_nursery() as devices:
                for i in range(CLIENTS):
                    token = clients[i % USERS].token
                    devices.start_soon(hold, ws_url, token, closes, up, ready_list)
                with trio.fail_after(20):
                    await up.wait()

                async with HttpClient(server.url) as http:
                    before = metrics((await http.request("GET", "/metrics")).body.decode())
                    sender, receiver = clients[0], clients[1]
                    async with sender.session() as s:
                        for n in range(30):
                            acked.append(await s.send(to=receiver.user_id, body=f"hello {n}"))
                        group = None
                        async with sender.http() as h:
                            group = await h.call(
                                "POST", "/v1/groups", {"name": "ops", "members": names[1:5]}
                            )
                        for n in range(10):
                            acked.append(
                                await s.send(channel=group["channel_id"], body=f"group {n}")
                            )
                    after = metrics((await http.request("GET", "/metrics")).body.decode())
                    assert (
                        after["chatd_messages_accepted_total"]
                        - before["chatd_messages_accepted_total"]
                        == 40
                    )
                    # user1 has 20 devices online: each gets every DM and group message
                    delivered = (
                        after["chatd_messages_delivered_total"]
                        - before["chatd_messages_delivered_total"]
                    )
                    assert delivered >= 40 * 20
                    assert (
                        after["chatd_ack_latency_seconds_count"]
                        - before["chatd_ack_latency_seconds_count"]
                        == 40
                    )
                    assert after["chatd_commit_ops_total"] > before["chatd_commit_ops_total"]
                    assert after["chatd_websockets"] >= CLIENTS
                    assert after["chatd_online_users"] == USERS
                    assert after["chatd_lmdb_used_bytes"] <= after["chatd_lmdb_map_bytes"]

                    # SIGTERM: STOPPING=1, then /healthz 503 on this kept-alive connection
                    seen = len(systemd.messages)
                    assert server.proc is not None
                    server.proc.terminate()
                    await systemd.wait_for("STOPPING", seen)
                    health = await http.request("GET", "/healthz")
                    assert health.status == 503
                with trio.fail_after(DRAIN + 10):
                    rc = await server.stop(None)
            assert rc == 0, server.log()
        assert len(closes) == CLIENTS
        assert {code for code, _ in closes} == {1001}
        times = sorted(t for _, t in closes)
        # five slices of 40-50 over half the drain window: the last comes at least 4/5 of
        # the window after the first (sleeps are never shorter than asked)
        assert times[-1] - times[0] >= DRAIN / 2 * 0.6

        # Restart on the same data: every acked message is in the receivers' inboxes.
        async with ServerProc(config, data) as again:
            for user in (names[1], names[2]):
                client = ChatClient(again.url, user, PASSWORD)
                async with client.session(since=0) as s:
                    got = await replay(s)
                mine = [a for a in acked if user in a["channel"] or a["channel"].startswith("g:")]
                for ack in mine:
                    assert (ack["channel"], ack["msg_id"]) in got
        nursery.cancel_scope.cancel()
    systemd.sock.close()
