"""Reconnect storms (issue 16): a restart under many client-library sessions brings them all
back, the accept rate is bounded, and the server logs no error.

The short storm runs ``python -m bench storm`` itself (200 sessions in 2 processes, a SIGTERM
drain and a SIGKILL restart); its time bounds only catch a hang. The full-size run (10,000
sessions) and its figures are in bench/README.md. The other tests pin down the pieces the
storm needed: the accept loop's token bucket (on trio's clock), the drain closing the
listening socket, and the client library giving up on a connect the server never answers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from chatd.client import ChatClient
from chatd.client import session as client_session
from tests.conftest import make_config, running

ROOT = Path(__file__).resolve().parent.parent


def test_a_short_storm_brings_every_session_back_with_no_error(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "storm", "--sessions", "200", "--procs", "2"]
    argv += ["--users", "4", "--settle", "1", "--max-wait", "90", "--out", str(tmp_path)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = tmp_path.glob("storm-*.json")
    (png,) = tmp_path.glob("storm-*.png")
    result = json.loads(path.read_text())
    summary = result["summary"]
    assert [r["kind"] for r in result["rounds"]] == ["term", "kill"]
    for r in result["rounds"]:
        assert r["all_back_s"] is not None  # every session reconnected after the restart
        assert r["samples"][-1]["back"] == 200
    assert summary["rounds"]["term"]["exit_code"] == 0  # the drain ended cleanly
    assert summary["server_log_errors"] == 0, result["server_log_sample"]
    assert summary["goals"]["no_session_refused"]["met"]
    assert png.stat().st_size > 0


@pytest.fixture
def autojump() -> MockClock:
    return MockClock(autojump_threshold=0.01)


async def test_the_accept_loop_takes_at_most_rate_per_second_after_its_burst(
    data_dir: Path,
) -> None:
    # A lower bound on the time taken: a slow machine only makes it longer.
    config = make_config(data_dir, server={"accept_rate": 20.0, "accept_burst": 2})
    async with running(config) as server:
        limits = server.app.connections
        before = limits.accepted
        socks = []
        t0 = trio.current_time()
        for _ in range(22):  # the kernel completes them all into the listen backlog
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", server.port))
            socks.append(sock)
        with trio.fail_after(60):
            while limits.accepted - before < 22:  # noqa: ASYNC110 (a counter, no event)
                await trio.sleep(0.05)
        elapsed = trio.current_time() - t0
        # 2 at once (the burst), then 20 per second: the last of 22 no sooner than 1 s in.
        assert elapsed >= (22 - 2) / 20.0 - 0.05
        for sock in socks:
            sock.close()


async def test_the_drain_closes_the_listener_so_reconnects_are_refused_at_once(
    data_dir: Path,
) -> None:
    async with running(make_config(data_dir)) as server:
        port = server.port
        server.drain()
        with trio.fail_after(5):
            while True:
                sock = trio.socket.socket()
                try:
                    await sock.connect(("127.0.0.1", port))
                except ConnectionRefusedError:
                    break  # refused, not left waiting in a backlog nobody reads
                finally:
                    sock.close()
                await trio.sleep(0.01)


async def test_a_connect_the_server_drops_before_the_upgrade_answer_is_given_up(
    autojump: MockClock,
) -> None:
    """trio-websocket's connect never wakes if the TCP connection ends before the answer to
    its upgrade; the client library bounds it (CONNECT_TIMEOUT) instead of hanging."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    async def drop_each() -> None:
        while True:
            conn, _ = await listener.accept()
            await conn.recv(65536)  # the upgrade request
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            conn.close()  # reset, no answer

    client = ChatClient(f"http://127.0.0.1:{port}", "alice", token="alice.token")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drop_each)
        t0 = trio.current_time()
        with (
            pytest.RaisesGroup(trio.TooSlowError, flatten_subgroups=True),
            trio.fail_after(10 * client_session.CONNECT_TIMEOUT),
        ):
            async with client.session(heartbeat=None):
                pass
        assert trio.current_time() - t0 >= client_session.CONNECT_TIMEOUT
        nursery.cancel_scope.cancel()
    listener.close()


async def test_a_hello_answered_not_now_is_retried_not_the_end_of_the_session() -> None:
    """A peer speaking the protocol by hand: the first connection is welcomed and closed
    1001 (a drain), the second's hello answered ``unavailable`` (busy), the third welcomed.
    The session survives the refusal and reconnects (``RefusedForNow``). Each connection's
    first frame is the hello (a heartbeat is due at every reconnect here; the race it could
    win before the fix is timing-dependent: the storm saw it 65 times in 3,000 sessions)."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    answers: list[dict[str, object]] = [
        {"type": "welcome", "user_id": "alice", "device_id": "d1", "inbox_head": 0},
        {"type": "error", "code": "unavailable", "message": "busy"},
        {"type": "welcome", "user_id": "alice", "device_id": "d2", "inbox_head": 0},
    ]
    served = trio.Event()
    first_frames: list[str] = []

    async def serve_one(conn: trio.socket.SocketType, answer: dict[str, object]) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        while True:
            ws.receive_data(await conn.recv(65536))
            events = list(ws.events())
            if any(isinstance(e, Request) for e in events):
                await conn.send(ws.send(AcceptConnection(subprotocol="chatd.v1.json")))
            texts = [e for e in events if isinstance(e, TextMessage)]
            if texts:  # the hello (it must come first)
                first_frames.append(json.loads(texts[0].data)["type"])
                await conn.send(ws.send(TextMessage(data=json.dumps(answer))))
                code = 1001 if answer["type"] == "welcome" else 1013
                if answer is answers[-1]:
                    served.set()
                    await trio.sleep_forever()
                await conn.send(ws.send(CloseConnection(code=code)))
                return

    async def serve() -> None:
        for answer in answers:
            conn, _ = await listener.accept()
            with conn:
                await serve_one(conn, answer)

    client = ChatClient(f"http://127.0.0.1:{port}", "alice", token="alice.token")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        with trio.fail_after(30):
            async with client.session(heartbeat=0.02) as s:
                await served.wait()
                while s.connects < 2:  # noqa: ASYNC110 (the welcome is handled in _keep)
                    await trio.sleep(0.01)
                assert s.welcome["device_id"] == "d2"
                assert s._ended is None  # not over: the refusal was retried
        assert first_frames == ["hello", "hello", "hello"]
        nursery.cancel_scope.cancel()
    listener.close()
