"""Structured logs: one line per event, ``text`` (logfmt key=value) or ``json``.

Every record becomes exactly one line: a traceback goes into the ``exc`` field with its
newlines escaped. Nothing chatd logs contains a password, a token or a message body by
design; as a second line of defence, :class:`Redact` masks anything shaped like a bearer
token (``<user_id>.<43 base64url chars>``) or an ``Authorization`` value before it is
written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from chatd.config import LogConfig

TOKEN = re.compile(r"\b[a-z0-9_]{3,32}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
BEARER = re.compile(r"(?i)\b(bearer)\s+\S+")
_QUOTE = re.compile(r'[\s"=\\]')


def redact(text: str) -> str:
    if "." in text:
        text = TOKEN.sub("<token>", text)
    if "earer" in text:
        text = BEARER.sub(r"\1 <redacted>", text)
    return text


def _utc(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": _utc(record),
        "level": record.levelname,
        "logger": record.name,
        "msg": redact(record.getMessage()),
    }
    if record.exc_info:
        out["exc"] = redact(formatter.formatException(record.exc_info))
    elif record.exc_text:
        out["exc"] = redact(record.exc_text)
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, self), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """logfmt: ``ts=... level=INFO logger=chatd msg="..."``; values with spaces, quotes or
    newlines are quoted and escaped, so one event is one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for key, value in _fields(record, self).items():
            text = str(value)
            if not text or _QUOTE.search(text):
                text = json.dumps(text, ensure_ascii=False)
            parts.append(f"{key}={text}")
        return " ".join(parts)


FORMATTERS: dict[str, type[logging.Formatter]] = {"text": TextFormatter, "json": JsonFormatter}


def setup(config: LogConfig) -> None:
    """Install chatd's one handler on the root logger (replacing any), per ``config``.
    Called at start-up and again on SIGHUP (which so reopens ``log.file``)."""
    root = logging.getLogger()
    handler: logging.Handler
    if config.file:
        handler = logging.FileHandler(config.file, encoding="utf-8", delay=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[config.format]())
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(config.level.upper())
