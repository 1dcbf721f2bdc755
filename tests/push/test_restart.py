"""A server killed (kill -9) with push jobs pending delivers them after a restart: the jobs
were stored in the message's own commit, so nothing but the retry timer was lost."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import trio

from chatd.client import ChatClient, HttpClient
from tests.conftest import PASSWORD
from tests.push.helpers import SECRET, verified
from tests.push.receiver import Receiver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(config: Path) -> subprocess.Popen[bytes]:
    with open(config.with_suffix(".log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "chatd", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def tail(log: Path) -> str:
    return log.read_text()[-2000:]


async def healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    with trio.fail_after(20):
        while True:
            assert proc.poll() is None, f"chatd exited: {tail(log)}"
            try:
                async with HttpClient(url, timeout=2) as http:
                    if (await http.request("GET", "/healthz")).status == 200:
                        return
            except OSError:
                pass
            await trio.sleep(0.05)


async def test_jobs_pending_at_kill_9_are_delivered_after_restart(tmp_path: Path) -> None:
    config = tmp_path / "chatd.toml"
    async with trio.open_nursery() as nursery:
        receiver = Receiver(statuses=[503])
        await receiver.start(nursery)
        port = free_port()  # after the receiver's: it cannot be handed the same one
        url = f"http://127.0.0.1:{port}"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{port}"\ndata = "{tmp_path / "data"}"\n'
            "[security]\nargon2_memory_kib = 7168\nargon2_time_cost = 5\n"
            # One try, then a retry far away: the job is surely pending at the kill.
            "[push]\nallow_private_networks = true\nretry_base = 600.0\nretry_max = 600.0\n"
        )
        proc = start(config)
        try:
            await healthy(url, proc, config.with_suffix(".log"))
            alice = ChatClient(url, "alice", PASSWORD)
            bob = ChatClient(url, "bob", PASSWORD)
            for user in (alice, bob):
                await user.signup()
                await user.login()
            async with HttpClient(url, token=bob.token) as http:
                body = {"kind": "webhook", "url": receiver.url, "secret": SECRET}
                await http.call("POST", "/v1/push/subscriptions", body)
            async with alice.session() as a:
                await a.send(to="bob", body="survive this")
            await receiver.wait(1, delivered=False)  # tried once: 503
            proc.kill()  # SIGKILL: no drain, nothing flushed but what was committed
            proc.wait()
            receiver.statuses = [200]
            proc = start(config)
            await healthy(url, proc, config.with_suffix(".log"))
            await receiver.wait(1)
            payload = verified(receiver.requests[-1].body, receiver.requests[-1].headers)
            assert (payload["msg_id"], payload["preview"], payload["count"]) == (
                1,
                "survive this",
                1,
            )
        finally:
            proc.kill()
            proc.wait()
            receiver.stop()
