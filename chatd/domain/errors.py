"""Domain errors: plain exceptions, each carrying its contract code (``forbidden``, ...).

They know nothing of HTTP or WebSocket: raise them anywhere in the domain, and the transport
maps the code to an HTTP status, an ``error`` frame and a close code in one table
(``chatd/net/errormap.py``).
"""

from __future__ import annotations

from typing import ClassVar


class ChatError(Exception):
    code: ClassVar[str] = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        ref: str | None = None,
        ws_url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after  # seconds
        self.ref = ref  # the client request it answers, when it had one
        self.ws_url = ws_url  # where to connect instead (wrong_shard)


class BadRequest(ChatError):
    pass


class Unauthorized(ChatError):
    code = "unauthorized"


class Forbidden(ChatError):
    code = "forbidden"


class NotFound(ChatError):
    code = "not_found"


class MethodNotAllowed(ChatError):
    code = "method_not_allowed"


class Conflict(ChatError):
    code = "conflict"


class TooLarge(ChatError):
    code = "too_large"


class RateLimited(ChatError):
    code = "rate_limited"


class Unavailable(ChatError):
    code = "unavailable"


class TooManySessions(ChatError):
    code = "too_many_sessions"


class WrongShard(ChatError):
    code = "wrong_shard"
