"""``chatd send``, ``chatd listen`` (JSON lines) and the line-based ``chatd chat``, as
processes against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import trio

from tests.conftest import PASSWORD, make_config, make_user, running
from tests.ops.cli import chatd


async def test_send_listen_and_chat(tmp_path: Path) -> None:
    env = {"CHATD_PASSWORD": PASSWORD}
    async with running(make_config(tmp_path / "data")) as server:
        await make_user(server, "alice")
        await make_user(server, "bob")
        sent = await chatd(
            "send",
            "--server",
            server.url,
            "--user",
            "alice",
            "--to",
            "bob",
            "hello",
            "bob",
            env=env,
        )
        assert sent.returncode == 0, sent.stderr
        ack = json.loads(sent.stdout)
        assert ack["type"] == "ack" and ack["channel"] == "dm:alice:bob"

        # listen replays from since=0, then waits for the chat's message
        listener = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "chatd",
                "listen",
                "--server",
                server.url,
                "--user",
                "bob",
                "--since",
                "0",
                "--count",
                "2",
            ],
            stdout=subprocess.PIPE,
            env={**os.environ, **env},
        )
        try:
            assert listener.stdout is not None
            out = bytearray()
            with trio.fail_after(20):
                while b'"synced"' not in out:
                    out += await listener.stdout.receive_some(65536)
                chat = await chatd(
                    "chat",
                    "--server",
                    server.url,
                    "--user",
                    "alice",
                    env=env,
                    stdin=b"/help\n/to bob from chat\nand again\n/history\n/quit\n",
                )
                assert chat.returncode == 0, chat.stderr
                while chunk := await listener.stdout.receive_some(65536):
                    out += chunk
                assert await listener.wait() == 0
        finally:
            if listener.returncode is None:
                listener.kill()
        frames = [json.loads(line) for line in out.decode().splitlines()]
        bodies = [f["body"] for f in frames if f["type"] == "msg"]
        assert bodies == ["hello bob", "from chat"]
        screen = chat.stdout.decode()
        assert "(sent #2 in dm:alice:bob)" in screen and "(sent #3" in screen
        assert "<alice> hello bob" in screen and "<alice> and again" in screen  # /history
