"""Domain errors: each carries its contract code, HTTP status and (for WebSocket) close code.

Raise them anywhere in the domain; ``chatd/http.py`` and ``chatd/ws.py`` are the only places that
turn them into a response or an ``error`` frame.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ChatError(Exception):
    code: ClassVar[str] = "bad_request"
    status: ClassVar[int] = 400
    #: WebSocket close code to send after the error frame, or None to keep the connection.
    close_code: ClassVar[int | None] = None

    def __init__(
        self, message: str, *, retry_after: float | None = None, ref: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.ref = ref

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.retry_after is not None:
            out["retry_after"] = max(1, int(self.retry_after * 1000 + 0.999))
        return out

    def frame(self) -> dict[str, Any]:
        """The WebSocket ``error`` frame for this error."""
        out: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.ref is not None:
            out["ref"] = self.ref
        if self.retry_after is not None:
            out["retry_after"] = self.body()["retry_after"]
        return out


class BadRequest(ChatError):
    pass


class Unauthorized(ChatError):
    code, status, close_code = "unauthorized", 401, 4001


class Forbidden(ChatError):
    code, status = "forbidden", 403


class NotFound(ChatError):
    code, status = "not_found", 404


class MethodNotAllowed(ChatError):
    code, status = "method_not_allowed", 405


class Conflict(ChatError):
    code, status = "conflict", 409


class TooLarge(ChatError):
    code, status = "too_large", 413


class RateLimited(ChatError):
    code, status = "rate_limited", 429


class Unavailable(ChatError):
    code, status = "unavailable", 503


class TooManySessions(ChatError):
    code, status, close_code = "too_many_sessions", 429, 1008
