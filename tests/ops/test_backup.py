"""``chatd backup`` of a live server (messages still flowing) restores into a working data
directory: a server started on the copy has every message acked before the backup."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from chatd.client import ChatClient
from tests.conftest import make_config, make_user, running
from tests.ops.cli import chatd, replay


async def test_backup_of_a_live_server_restores(tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    async with running(make_config(data)) as server:
        alice = await make_user(server, "alice")
        await make_user(server, "bob")
        async with alice.session() as s:
            acked = [await s.send(to="bob", body=f"m{i}") for i in range(20)]

            async def keep_sending() -> None:
                for i in range(1000):
                    await s.send(to="bob", body=f"during {i}")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_sending)  # the copy is one snapshot regardless
                done = await chatd("backup", str(dest), "--data", str(data))
                nursery.cancel_scope.cancel()
        assert done.returncode == 0, done.stderr
        copy = json.loads(done.stdout)
        assert copy["users"] == 2 and copy["messages"] >= 20
        again = await chatd("backup", str(dest), "--data", str(data))
        assert again.returncode == 1 and b"not empty" in again.stderr

    restored = make_config(dest)
    async with running(restored) as server:
        bob = ChatClient(server.url, "bob", "correct horse")
        async with bob.session(since=0) as s:
            got = {msg_id: body for (_, msg_id), body in (await replay(s)).items()}
        for ack in acked:
            assert ack["msg_id"] in got
        assert len(got) == copy["messages"]
        assert sorted(got) == list(range(1, len(got) + 1))  # no gaps: one snapshot
