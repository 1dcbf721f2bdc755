"""Key and value encodings.

Keys are ``prefix + b"\\x00" + suffix``. Prefixes (user ids, channel ids) never contain NUL, so
all keys of one prefix sort together and a range scan over them is ordered; integer suffixes are
8-byte big-endian so byte order equals numeric order. Values are msgpack.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import msgpack

SEP = b"\x00"
_INT_BYTES = 8
_SEP_INT = struct.Struct(">xQ").pack  # SEP, then the 8-byte big-endian number


def prefix(name: str) -> bytes:
    """The key prefix shared by every record under ``name`` (a user or channel id)."""
    raw = name.encode()
    if SEP in raw:
        raise ValueError(f"NUL byte in key prefix {name!r}")
    return raw + SEP


MAX_ID = (1 << 64) - 1


def int_key(name: str, number: int) -> bytes:
    """``name`` + big-endian ``number``: orders by name, then numerically. Numbers past the
    8-byte range clamp to its top, so a cursor beyond every id reads as past the end."""
    # prefix() inlined: this runs several times per stored message
    raw = name.encode()
    if SEP in raw:
        raise ValueError(f"NUL byte in key prefix {name!r}")
    if not 0 <= number <= MAX_ID:
        number = 0 if number < 0 else MAX_ID
    return raw + _SEP_INT(number)


def after_prefix(name: str) -> bytes:
    """The smallest key above every key under ``name`` (NUL is the separator, so use 0x01)."""
    return prefix(name)[:-1] + b"\x01"


def int_suffix(key: bytes) -> int:
    return int.from_bytes(key[-_INT_BYTES:], "big")


def str_key(name: str, suffix: str) -> bytes:
    raw = name.encode()  # prefix() inlined, as in int_key
    if SEP in raw:
        raise ValueError(f"NUL byte in key prefix {name!r}")
    return raw + SEP + suffix.encode()


def str_suffix(key: bytes) -> str:
    return key[key.index(SEP) + 1 :].decode()


_packers = threading.local()


def pack(value: Any) -> bytes:
    # ``msgpack.packb`` builds a Packer per call (about half its time for a small record);
    # a Packer is not thread-safe, so each thread (the writer, mostly) keeps its own.
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)  # type: ignore[no-any-return]


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)
