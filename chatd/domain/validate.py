"""Shape checks shared by the HTTP API and the WebSocket frames."""

from __future__ import annotations

import re
from typing import Any

from chatd.domain.errors import BadRequest

USER_ID = re.compile(r"[a-z0-9_]{3,32}")
INT64_MAX = 2**63 - 1  # ids, cursors and counts fit a signed 64-bit integer
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


def query_int(query: dict[str, list[str]], name: str) -> int | None:
    """The one ``?name=`` value as an integer from 0 to 2**63-1, None if absent; BadRequest
    for anything else (digits are counted before conversion, so a huge value costs nothing)."""
    values = query.get(name)
    if not values:
        return None
    value = values[0]
    digits = value.lstrip("0")
    if (
        len(values) > 1
        or not (value.isascii() and value.isdigit())
        or len(digits) > len(str(INT64_MAX))
        or int(digits or "0") > INT64_MAX
    ):
        raise BadRequest(f"{name} must be one integer from 0 to {INT64_MAX}")
    return int(digits or "0")


def unicode_strings(data: Any) -> None:
    """BadRequest if any string in decoded JSON (keys included) holds a lone surrogate.

    ``json.loads`` turns a ``\\ud800`` escape into a str that cannot be encoded as UTF-8, so
    it would fail later, in hashing or storage. Iterative: depth costs no stack.
    """
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise BadRequest(
                        "strings must be valid Unicode: lone surrogate escape (\\ud800-\\udfff)"
                    ) from None
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
