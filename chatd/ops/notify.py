"""sd_notify without a dependency: datagrams to ``$NOTIFY_SOCKET``.

systemd (``Type=notify``) learns from these that the server accepts connections (``READY=1``),
is alive (``WATCHDOG=1``), what it is doing (``STATUS=...``) and that it is stopping
(``STOPPING=1``). The watchdog pings are sent by a task on the event loop, so a loop that
stalls stops them and systemd restarts the process after ``WatchdogSec``. Without
``NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

import trio

log = logging.getLogger("chatd.notify")
#: Seconds between STATUS= updates when systemd asks for no watchdog.
STATUS_INTERVAL = 5.0


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        #: the socket address (abstract names start with NUL), or None: nothing to notify
        self.address = address
        #: seconds between watchdog pings (half of ``WATCHDOG_USEC``), 0: no watchdog
        self.interval = watchdog_usec / 2e6 if watchdog_usec > 0 else 0.0
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; False if it could not be sent (logged
        once: systemd going away must not stop the server)."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("sd_notify to %r failed: %s", self.address, exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str = "draining") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    async def keepalive(self, status: Callable[[], str]) -> None:
        """Ping the watchdog with a fresh STATUS= line every half ``WATCHDOG_USEC``, or every
        few seconds when systemd set no watchdog (it then ignores the ping, but the status
        stays fresh). Runs until cancelled."""
        if self.address is None:
            return
        while True:
            await trio.sleep(self.interval or STATUS_INTERVAL)
            self.send("WATCHDOG=1", f"STATUS={status()}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def from_environment(env: Mapping[str, str] | None = None) -> Notifier:
    """The notifier systemd's environment asks for. ``@name`` is an abstract socket;
    ``WATCHDOG_PID``, when set, must be this process for the watchdog to apply."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET") or None
    if address is not None and address.startswith("@"):
        address = "\0" + address[1:]
    elif address is not None and not address.startswith("/"):
        log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name; ignored", address)
        address = None
    usec = 0
    pid = env.get("WATCHDOG_PID")
    if pid is None or pid == str(os.getpid()):
        try:
            usec = int(env.get("WATCHDOG_USEC", "0"))
        except ValueError:
            usec = 0
    return Notifier(address, usec)
