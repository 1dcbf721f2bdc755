"""The pure parts of chatd/ops: sd_notify's environment, the drain's slices, the notifier on
a real datagram socket (abstract namespace too), SIGHUP's key diff."""

from __future__ import annotations

import os
import socket

from chatd.config import Config
from chatd.ops import drain, notify
from chatd.ops.reload import changed


def test_notify_environment() -> None:
    n = notify.from_environment({"NOTIFY_SOCKET": "@chatd-test", "WATCHDOG_USEC": "30000000"})
    assert n.address == "\0chatd-test" and n.interval == 15.0
    other = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert notify.from_environment(other).interval == 0.0  # the watchdog is another process's
    assert not notify.from_environment({}).enabled
    assert not notify.from_environment({"NOTIFY_SOCKET": "relative"}).enabled
    assert not notify.Notifier(None).send("READY=1")


def test_notifier_sends_to_an_abstract_socket() -> None:
    name = f"\0chatd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(name)
        n = notify.from_environment({"NOTIFY_SOCKET": "@" + name[1:]})
        n.ready("serving")
        n.stopping()
        n.close()
        first = systemd.recv(4096).decode().splitlines()
        assert first[:2] == ["READY=1", "STATUS=serving"]
        assert systemd.recv(4096).decode().startswith("STOPPING=1")


def test_drain_plan_spreads_big_crowds_only() -> None:
    assert drain.plan(0, 5.0) == (1, 0.0)
    assert drain.plan(50, 5.0) == (1, 0.0)
    assert drain.plan(200, 2.0) == (4, 0.5)
    slices, gap = drain.plan(19000, 5.0)
    assert slices == 100 and gap == 0.05  # at most 20 slices a second
    assert drain.plan(1000, 0.0) == (1, 0.0)


async def test_close_spread_closes_everyone_once_in_slices(autojump_clock: object) -> None:
    import trio

    closed: list[tuple[int, float]] = []

    class Conn:
        def close(self, code: int, reason: str = "") -> None:
            closed.append((code, trio.current_time()))

    start = trio.current_time()
    assert await drain.close_spread([Conn() for _ in range(120)], 3.0) == 120
    assert {c for c, _ in closed} == {1001}
    stamps = sorted({round(t - start, 6) for _, t in closed})
    assert stamps == [0.0, 1.0, 2.0]  # three slices of 40 over the window


def test_reload_diff_names_keys() -> None:
    old = Config()
    new = old.replace("limits", send_rate=5.0).replace("log", level="DEBUG")
    assert changed(old, new) == ["limits.send_rate", "log.level"]
