"""Memory that must not grow with churn (issue 19), read through the admin socket's
``debug.memory``: the per-user and per-connection tables of a real server go back to empty
once the users who came have left, and the report itself works (trim, gc counts). Rate-limit
buckets are forgotten on a minute's schedule: tests/domain/test_ratelimit.py, on MockClock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from chatd.client import ChatClient
from chatd.ops.admin import call
from tests.conftest import PASSWORD, make_config, running


async def memory(data: Path, **request: Any) -> dict[str, Any]:
    answer = await trio.to_thread.run_sync(call, data, {"op": "debug.memory", **request})
    assert answer["ok"], answer
    return answer


async def test_debug_memory_reports_the_process_and_its_tables(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running(make_config(data)):
        report = await memory(data, trim=True, collect=True, top=5)
        assert report["status"]["RssAnon_kib"] > 0
        assert report["trim"]["rss_anon_after_kib"] > 0
        assert len(report["gc_objects"]) == 5
        assert report["tracemalloc"] is None  # only with CHATD_TRACEMALLOC at start-up
        assert report["tables"]["sessions_users"] == 0


async def test_tables_empty_again_after_users_come_and_go(tmp_path: Path) -> None:
    """Users connect, send, mark read, then leave for good: once presence's grace has run out
    nothing of theirs stays in the session, presence, heartbeat, read or rate-limit tables."""
    data = tmp_path / "data"
    config = make_config(data, presence={"grace": 0.2, "sweep_interval": 0.1})
    async with running(config) as server:
        clients = [ChatClient(server.url, f"churn{i:02d}", PASSWORD) for i in range(12)]
        for c in clients:
            await c.signup()
        for round_ in range(2):
            for i, c in enumerate(clients):
                peer = clients[(i + 1) % len(clients)]
                async with c.session(reconnect=False) as session:
                    ack = await session.send(to=peer.user_id, body=f"hi {round_}")
                    read = {"type": "read", "channel": ack["channel"], "msg_id": ack["msg_id"]}
                    await session.send_frame(read)
                    await session.ping()
        with trio.fail_after(10):
            while True:
                tables = (await memory(data, gc=False))["tables"]
                if tables["presence_leaving"] == 0 and tables["websockets"] == 0:
                    break
                await trio.sleep(0.1)
        assert tables["sessions_users"] == tables["sessions_devices"] == 0
        assert tables["heartbeat_watched"] == 0
        assert tables["receipts_waiting"] == 0
        assert tables["push_online_users"] == 0
