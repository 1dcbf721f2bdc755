"""Shape checks shared by the HTTP API and the WebSocket frames."""

from __future__ import annotations

import re
from typing import Any

from chatd.errors import BadRequest

USER_ID = re.compile(r"[a-z0-9_]{3,32}")
PASSWORD_MIN, PASSWORD_MAX = 8, 1024
DISPLAY_NAME_MAX = 64


def field(data: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    """``data[name]`` if it has type ``kind``; BadRequest naming the field otherwise."""
    if name not in data or data[name] is None:
        if required:
            raise BadRequest(f"missing field {name!r}")
        return None
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"field {name!r} must be a {kind.__name__}")
    return value


def user_id(value: Any, name: str = "user_id") -> str:
    if not isinstance(value, str) or not USER_ID.fullmatch(value):
        raise BadRequest(f"{name} must match ^[a-z0-9_]{{3,32}}$")
    return value


def password(value: Any) -> str:
    if not isinstance(value, str) or not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise BadRequest(f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return value


def display_name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= DISPLAY_NAME_MAX:
        raise BadRequest(f"display_name must be 1 to {DISPLAY_NAME_MAX} characters")
    return value.strip()
