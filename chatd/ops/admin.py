"""The admin socket: a unix stream socket in the data directory (``admin.sock``, mode 0600)
through which ``chatd user ...`` asks the running server to change data, so nothing but the
server's own committer ever writes its LMDB environment.

One request per connection: a JSON object on one line, answered by one JSON line,
``{"ok": true, ...}`` or ``{"ok": false, "error": code, "message": text}`` (the contract's
error codes). Operations: ``user.add``, ``user.disable``, ``user.enable``,
``user.reset-password`` (see ``chatd/ops/users.py``), ``stats`` (the server's counters) and
``debug.memory`` (what the process's memory is made of: ``chatd/ops/memdebug.py``).
Only the data directory's owner can connect (the socket is 0600); requests are never logged
with their fields, which may hold a password.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from chatd.domain.errors import BadRequest, ChatError
from chatd.ops.users import UserAdmin

log = logging.getLogger("chatd.admin")
SOCKET_NAME = "admin.sock"
MAX_REQUEST = 64 * 1024
TIMEOUT = 30.0
#: sun_path's size on Linux, the terminating NUL included
MAX_PATH = 107


def socket_path(data: str | Path) -> Path:
    return Path(data) / SOCKET_NAME


class AdminServer:
    def __init__(
        self,
        users: UserAdmin,
        stats: Callable[[], dict[str, Any]],
        memory: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.users = users
        self.stats = stats
        self.memory = memory

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        u = self.users

        def text(key: str) -> str:
            value = request.get(key)
            if not isinstance(value, str):
                raise BadRequest(f"{key}: a string is required")
            return value

        if op == "user.add":
            name = request.get("display_name")
            result = await u.add(text("user_id"), text("password"), name and text("display_name"))
        elif op == "user.disable":
            result = await u.disable(text("user_id"))
        elif op == "user.enable":
            result = await u.enable(text("user_id"))
        elif op == "user.reset-password":
            result = await u.reset_password(text("user_id"), text("password"))
        elif op == "stats":
            result = self.stats()
        elif op == "debug.memory" and self.memory is not None:
            result = self.memory(request)
        else:
            raise BadRequest(f"unknown admin op {op!r}")
        return {"ok": True, **result}

    async def serve_one(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.fail_after(TIMEOUT):
                    request = await _read_line(stream)
                    try:
                        answer = await self.handle(json.loads(request))
                    except ChatError as exc:
                        answer = {"ok": False, "error": exc.code, "message": exc.message}
                    except (ValueError, AttributeError, TypeError):
                        answer = _bad("the request must be one JSON object on one line")
                    await stream.send_all(json.dumps(answer).encode() + b"\n")
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except Exception:
                log.exception("admin request failed")
                try:
                    await stream.send_all(json.dumps(_bad("internal error", "internal")).encode())
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def run(
        self,
        data: str | Path,
        *,
        task_status: trio.TaskStatus[Path | None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``<data>/admin.sock`` until cancelled (the socket file is removed then)."""
        path = socket_path(data)
        if len(os.fsencode(path)) > MAX_PATH:
            log.warning("admin socket path %s is too long for a unix socket; no admin socket", path)
            task_status.started(None)
            return
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            path.unlink(missing_ok=True)  # a stale one (the data lock says no server runs)
            old = os.umask(0o177)
            try:
                await sock.bind(str(path))
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            sock.listen(16)
            listener = trio.SocketListener(sock)
        except BaseException:
            sock.close()
            raise
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(path)
                await trio.serve_listeners(self.serve_one, [listener], handler_nursery=nursery)
        finally:
            sock.close()
            path.unlink(missing_ok=True)


def _bad(message: str, code: str = "bad_request") -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message}


async def _read_line(stream: trio.SocketStream) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise ValueError("request too large")
    return bytes(buf).split(b"\n", 1)[0]


def call(data: str | Path, request: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request to the server running on ``data`` (blocking; for the CLI).
    ``ConnectionRefusedError``/``FileNotFoundError`` when no server listens there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path(data)))
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer: dict[str, Any] = json.loads(buf)
    return answer
