"""Structured logs: one JSON object (or logfmt line) per event, and never a password, a token
or a message body, even at DEBUG, across signup, login (good and bad), sends, an admin user
add and a drain. SIGHUP reopens ``log.file`` (after a rotation) and applies live limits."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import trio

from chatd.client import ChatClient, HttpError
from chatd.ops.admin import call
from tests.ops.proc import ServerProc, write_config

SECRET_PW = "pw-Zebra-Quartz-9931"
SECRET_BODY = "body-Nebula-Walrus-4410"


async def _session_that_logs_in_and_sends(url: str, data: Path) -> list[str]:
    alice = ChatClient(url, "alice", SECRET_PW)
    bob = ChatClient(url, "bob", SECRET_PW)
    await alice.signup()
    await bob.signup()
    tokens = [await alice.login(), await bob.login()]
    wrong = ChatClient(url, "alice", SECRET_PW + "-wrong")
    try:
        await wrong.login()
    except HttpError:
        pass
    async with alice.session() as a, bob.session():
        for _ in range(3):
            await a.send(to="bob", body=SECRET_BODY)
    answer = await trio.to_thread.run_sync(
        call, data, {"op": "user.add", "user_id": "carol", "password": SECRET_PW}
    )
    assert answer["ok"], answer
    return tokens


async def test_json_logs_hold_no_secret(tmp_path: Path) -> None:
    config = write_config(tmp_path / "chatd.toml")
    data = tmp_path / "data"
    args = ("--log-format", "json", "--log-level", "DEBUG")
    async with ServerProc(config, data, *args) as server:
        tokens = await _session_that_logs_in_and_sends(server.url, data)
        assert await server.stop() == 0
    log = server.log()
    for secret in (SECRET_PW, SECRET_BODY, *tokens, *(t.split(".", 1)[1] for t in tokens)):
        assert secret not in log
    lines = log.splitlines()
    events = [json.loads(line) for line in lines if not line.startswith("chatd listening on")]
    assert events and all({"ts", "level", "logger", "msg"} <= set(e) for e in events)
    assert any(e["msg"] == "SIGTERM: draining" for e in events)


async def test_text_logs_to_a_file_reopened_on_sighup(tmp_path: Path) -> None:
    logfile = tmp_path / "chatd.log"
    config = write_config(tmp_path / "chatd.toml", extra=f'\n[log]\nfile = "{logfile}"\n')
    data = tmp_path / "data"
    async with ServerProc(config, data) as server:
        tokens = await _session_that_logs_in_and_sends(server.url, data)
        rotated = tmp_path / "chatd.log.1"
        logfile.rename(rotated)
        # a live key (send_rate) and one that needs a restart (hello_timeout)
        text = config.read_text().replace("send_rate = 10000.0", "send_rate = 5.0")
        config.write_text(text.replace("drain_timeout", "hello_timeout = 3.0\ndrain_timeout"))
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        for _ in range(200):  # the reopened file gets SIGHUP's own log line
            if logfile.exists() and "SIGHUP" in logfile.read_text():
                break
            await trio.sleep(0.05)
        assert await server.stop() == 0
    fresh = logfile.read_text()
    assert "limits.send_rate" in fresh and "need a restart: server.hello_timeout" in fresh
    assert "SIGTERM: draining" in fresh
    everything = rotated.read_text() + fresh + server.log()
    for secret in (SECRET_PW, SECRET_BODY, *tokens):
        assert secret not in everything
    for line in fresh.splitlines():  # logfmt: one event per line
        assert re.match(r"ts=\S+ level=[A-Z]+ logger=\S+ msg=", line), line
