"""The one table that turns a domain error code into what each transport sends.

Domain errors (``chatd/domain/errors.py``) carry only a contract code. Over HTTP the code picks
the status; over WebSocket every error is an ``error`` frame, and the code picks whether the
connection is then closed, and with which close code. A transport-level error (an HTTP
framing problem, say) may carry a ``status`` of its own.
"""

from __future__ import annotations

from typing import Any

from chatd.domain.errors import ChatError
from chatd.protocol.errors import ProtocolError
from chatd.protocol.errors import error_frame as protocol_error_frame

#: What the transport answers: a domain error, or the protocol core's (the peer's) error.
Coded = ChatError | ProtocolError

HTTP_STATUS: dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
    "too_many_sessions": 429,
    "wrong_shard": 421,
    "internal": 500,
    "not_implemented": 501,
    "unavailable": 503,
    "http_version_not_supported": 505,
}

#: Codes after whose ``error`` frame the WebSocket is closed; others leave it open.
CLOSE_CODE: dict[str, int] = {
    "unauthorized": 4001,
    "wrong_shard": 4002,
    "too_many_sessions": 1008,
}


def retry_after_ms(seconds: float) -> int:
    """The contract's ``retry_after``: whole milliseconds, at least 1."""
    return max(1, int(seconds * 1000 + 0.999))


def http_status(exc: Coded) -> int:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else HTTP_STATUS.get(exc.code, 400)


def error_body(exc: Coded) -> dict[str, Any]:
    """The JSON body of an HTTP error response."""
    out: dict[str, Any] = {"error": exc.code, "message": exc.message}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        out["retry_after"] = retry_after_ms(retry_after)
    return out


def error_frame(exc: Coded) -> dict[str, Any]:
    """The WebSocket ``error`` frame for ``exc``."""
    retry_after = getattr(exc, "retry_after", None)
    return protocol_error_frame(
        exc.code,
        exc.message,
        ref=exc.ref,
        retry_after=None if retry_after is None else retry_after_ms(retry_after),
        ws_url=getattr(exc, "ws_url", None),
    )


def close_code(exc: Coded) -> int | None:
    """The close code to send after ``exc``'s error frame, or None to stay open."""
    return CLOSE_CODE.get(exc.code)
