"""``chatd compact``: refused while the server runs; with it stopped, the data file shrinks
once retention has freed pages, and a server started on it has everything that was kept."""

from __future__ import annotations

import json
from pathlib import Path

from chatd.client import ChatClient
from tests.conftest import make_config, make_user, running
from tests.ops.cli import chatd, replay


async def test_compact_refuses_beside_a_server_and_keeps_every_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running(make_config(data)) as server:
        alice = await make_user(server, "alice")
        await make_user(server, "bob")
        async with alice.session() as s:
            acked = [await s.send(to="bob", body=f"m{i} " + "x" * 200) for i in range(300)]
        busy = await chatd("compact", "--data", str(data))
        assert busy.returncode == 1 and b"stop the server" in busy.stderr

    done = await chatd("compact", "--data", str(data))
    assert done.returncode == 0, done.stderr
    sizes = json.loads(done.stdout)
    assert sizes["file_bytes_after"] <= sizes["file_bytes_before"]
    assert not (data / "compact.tmp").exists()

    async with running(make_config(data)) as server:
        bob = ChatClient(server.url, "bob", "correct horse")
        async with bob.session(since=0) as s:
            got = {msg_id for (_, msg_id) in await replay(s)}
        assert got == {ack["msg_id"] for ack in acked}
