"""Requests, responses and routes: what the API handlers see, with no socket in sight.

:class:`Router` matches a method and a path (``{name}`` captures one segment; HEAD runs the
GET handler). :func:`run_handler` turns domain and storage errors into error responses through
the transport's one error table (``chatd/net/errormap.py``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from chatd.domain import validate
from chatd.domain.errors import BadRequest, ChatError, MethodNotAllowed, NotFound, Unavailable
from chatd.net.errormap import error_body, http_status
from storage import StorageUnavailable

log = logging.getLogger("chatd.http")
WS_PATH = "/v1/ws"
INTERNAL = {"error": "internal", "message": "internal server error"}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    client: str
    body: bytes = b""
    user_id: str = ""  # set by the router for authenticated routes
    token: str = ""

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (UTF-8, finite numbers, every string valid Unicode);
        BadRequest otherwise, before any handler sees it."""
        try:
            text = self.body.decode("utf-8")
            data = json.loads(text, parse_constant=_no_constant)
        except RecursionError:
            raise BadRequest("body is nested too deeply") from None
        except ValueError:  # UnicodeDecodeError and JSONDecodeError included
            raise BadRequest("body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("body must be a JSON object")
        if "\\u" in text:  # a lone surrogate can only come from an escape
            validate.unicode_strings(data)
        return data

    def bearer(self) -> str:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def is_websocket(self) -> bool:
        return (
            self.headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in self.headers.get("connection", "").lower()
        )


@dataclass(frozen=True)
class Text:
    """A response body that is not JSON (``/metrics``)."""

    body: bytes
    content_type: bytes


@dataclass
class Response:
    status: int
    payload: Any = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[..., Awaitable[Response]]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Router:
    """Method + path-pattern routing. ``{name}`` in a pattern captures one path segment."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], dict[str, tuple[Handler, bool]]]] = []

    def add(self, method: str, pattern: str, handler: Handler, *, auth: bool = True) -> None:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        for existing, methods in self._routes:
            if existing.pattern == regex.pattern:
                methods[method] = (handler, auth)
                return
        self._routes.append((regex, {method: (handler, auth)}))

    def match(self, method: str, path: str) -> tuple[Handler, bool, dict[str, str]]:
        """The handler for ``method`` on ``path``; HEAD runs the GET handler (the connection
        sends the same status and headers, without the body)."""
        if path == WS_PATH:  # reached only without the upgrade headers
            raise UpgradeRequired(f"{WS_PATH} is the WebSocket endpoint: send an upgrade request")
        if method == "HEAD":
            method = "GET"
        for regex, methods in self._routes:
            m = regex.match(path)
            if m is None:
                continue
            if method not in methods:
                allowed = sorted({*methods, "HEAD"} if "GET" in methods else methods)
                raise NotAllowedHere(f"{method} is not allowed on {path}", allow=allowed)
            handler, auth = methods[method]
            return handler, auth, {k: unquote(v) for k, v in m.groupdict().items()}
        raise NotFound(f"no route for {path}")


class NotAllowedHere(MethodNotAllowed):
    """405, with the methods the path has (the ``Allow`` header)."""

    def __init__(self, message: str, *, allow: list[str]) -> None:
        super().__init__(message)
        self.allow = allow


class UpgradeRequired(ChatError):
    """``/v1/ws`` asked for without the WebSocket upgrade headers: 426."""

    code, status = "bad_request", 426


def error_response(exc: ChatError) -> Response:
    headers = []
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    if isinstance(exc, NotAllowedHere):
        headers.append((b"allow", ", ".join(exc.allow).encode()))
    elif isinstance(exc, UpgradeRequired):
        headers += [(b"upgrade", b"websocket"), (b"connection", b"upgrade")]
    return Response(http_status(exc), error_body(exc), headers)


async def run_handler(handler: Handler, request: Request, params: dict[str, str]) -> Response:
    """Call a route handler, turning domain and storage errors into error responses."""
    try:
        return await handler(request, **params)
    except ChatError as exc:
        return error_response(exc)
    except StorageUnavailable as exc:
        return error_response(Unavailable(str(exc)))
    except Exception:
        log.exception("%s %s from %s failed", request.method, request.path, request.client)
        return Response(500, INTERNAL)
