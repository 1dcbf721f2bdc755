"""The protocol core's two error families, in the manner of h11's ``RemoteProtocolError`` and
``LocalProtocolError``.

- :class:`ProtocolError`: the **peer** sent something the protocol does not allow (a malformed
  frame, a frame the session's state refuses). It carries the contract's error code as a hint
  and, when the offending frame had a usable one, its ``ref``; :meth:`ProtocolError.frame` is
  the ``error`` frame that answers it. Whether the connection then stays open is the
  transport's decision (its one table of close codes), not the core's.
- :class:`SessionError`: the **shell** fed the session machine an input its state does not
  allow. That is a bug in chatd, never the peer's fault; the session is CLOSED for good and the
  shell's last-resort handler closes the connection (1011).

Neither imports anything of chatd, so both can be raised and caught on either side of the core.
"""

from __future__ import annotations

from typing import Any


class ProtocolError(Exception):
    """The peer broke the protocol. ``code`` is the contract code to answer with."""

    def __init__(self, message: str, code: str = "bad_request", ref: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        #: the client request this answers (a frame's ``ref``), when it had a usable one
        self.ref = ref

    def frame(self) -> dict[str, Any]:
        """The ``error`` frame that answers this error: ``{type, code, message, ref?}``."""
        return error_frame(self.code, self.message, ref=self.ref)


class SessionError(Exception):
    """The shell fed the session machine an input its state does not allow (a chatd bug)."""


def error_frame(code: str, message: str, *, ref: str | None = None, **extra: Any) -> dict[str, Any]:
    """An ``error`` frame: ``{type, code, message, ref?, ...extra}`` (None values left out).

    The one place its shape is written: protocol errors and the transport's answers to domain
    errors (``retry_after``, ``ws_url``) both build it here.
    """
    out: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        out["ref"] = ref
    out.update((k, v) for k, v in extra.items() if v is not None)
    return out
