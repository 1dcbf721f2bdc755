"""``chatd user ...`` through the running server's admin socket (0600 in the data dir), and
offline with the data lock; disable and reset-password end tokens and sessions at once;
``chatd stats`` reads beside a running server."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from chatd.client import ChatClient, ChatError, HttpClient, HttpError
from chatd.ops.admin import call, socket_path
from chatd.ops.datalock import DataLock
from tests.conftest import make_config, running
from tests.ops.cli import chatd

PW = "a long enough password"


async def admin(data: Path, request: dict[str, Any]) -> dict[str, Any]:
    """The admin socket's answer, called as the CLI does (blocking, so in a thread)."""
    return await trio.to_thread.run_sync(call, data, request)


async def test_user_commands_through_the_admin_socket(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running(make_config(data)) as server:
        assert stat.S_IMODE(socket_path(data).stat().st_mode) == 0o600
        env = {"CHATD_PASSWORD": PW}
        done = await chatd("user", "--data", str(data), "add", "carol", env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"ok": True, "user_id": "carol"}
        again = await admin(data, {"op": "user.add", "user_id": "carol", "password": PW})
        assert again["error"] == "conflict"
        await ChatClient(server.url, "dave", PW).signup()

        carol = ChatClient(server.url, "carol", PW)
        async with carol.session(reconnect=False) as session:
            await session.send(to="dave", body="before")
            off = await chatd("user", "--data", str(data), "disable", "carol")
            assert off.returncode == 0, off.stderr
            answer = json.loads(off.stdout)
            assert answer["tokens_revoked"] == 1 and answer["sessions_ended"] == 1
            frames = []
            with trio.fail_after(5), pytest.raises(ChatError) as refused:
                while True:  # the error frame, then the close 4001 ends the session
                    frames.append(await session.next_frame())
            assert refused.value.code == "unauthorized"
            assert frames[-1]["code"] == "unauthorized"
        async with HttpClient(server.url, token=carol.token) as http:
            assert (await http.request("GET", "/v1/me")).status == 401
        with pytest.raises(HttpError) as bad:
            await carol.login()
        assert bad.value.status == 401

        assert (await admin(data, {"op": "user.enable", "user_id": "carol"}))["ok"]
        old_token = await carol.login()
        reset = await chatd(
            "user",
            "--data",
            str(data),
            "reset-password",
            "carol",
            "--password-stdin",
            stdin=b"another long password\n",
        )
        assert reset.returncode == 0, reset.stderr
        assert json.loads(reset.stdout)["tokens_revoked"] == 1
        async with HttpClient(server.url, token=old_token) as http:
            assert (await http.request("GET", "/v1/me")).status == 401
        with pytest.raises(HttpError):
            await carol.login()
        carol.password = "another long password"
        await carol.login()

        missing = await admin(data, {"op": "user.disable", "user_id": "nobody"})
        assert missing["error"] == "not_found"

        # read-only stats beside the running server
        st = await chatd("stats", "--data", str(data))
        assert st.returncode == 0, st.stderr
        counts = json.loads(st.stdout)
        assert counts["users"] == 2 and counts["messages"] == 1
        assert 0 < counts["map_used_bytes"] <= counts["map_bytes"]
        # the server's map (reserved on disk: writemap), not the reader's own
        assert counts["map_bytes"] == server.app.store.env.env.info()["map_size"]
        assert counts["file_bytes"] >= counts["map_bytes"]


async def test_user_commands_offline_hold_the_lock_or_refuse(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"CHATD_PASSWORD": PW}
    done = await chatd("user", "--data", str(data), "add", "erin", env=env)
    assert done.returncode == 0, done.stderr  # no server: in the command's own process
    with DataLock(data):  # as if a server held the directory but its socket were gone
        refused = await chatd("user", "--data", str(data), "disable", "erin")
    assert refused.returncode == 1
    assert b"refusing to write" in refused.stderr
    async with running(make_config(data)) as server:
        await ChatClient(server.url, "erin", PW).login()
