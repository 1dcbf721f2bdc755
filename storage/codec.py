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


# -- the compact encodings of messages, inboxes and refs (format 2, see storage/env.py)

U48_MAX = (1 << 48) - 1
_U48 = struct.Struct(">Q")


def u48(number: int) -> bytes:
    """``number`` as 6 big-endian bytes (ids, sequence numbers and ms stamps: up to 2**48-1,
    the year 10889 for a stamp). ValueError outside that range."""
    if not 0 <= number <= U48_MAX:
        raise ValueError(f"{number} does not fit in 48 bits")
    return _U48.pack(number)[2:]


def from_u48(raw: bytes, offset: int = 0) -> int:
    return int.from_bytes(raw[offset : offset + 6], "big")


def ordered(number: int) -> bytes:
    """An order-preserving variable-length unsigned integer: a byte giving the length of the
    big-endian digits, then the digits (0 is ``b"\\x00"``). Byte order equals numeric order
    (a longer number is a bigger one), so it serves as a sort key in 1 + ceil(bits / 8) bytes:
    a msg_id below 65,536 takes 3 bytes instead of 8."""
    if number < 0:
        raise ValueError("ordered() takes unsigned integers")
    length = (number.bit_length() + 7) // 8
    return bytes((length,)) + number.to_bytes(length, "big")


def from_ordered(raw: bytes, offset: int = 0) -> tuple[int, int]:
    """(the number, the offset just past it) of an :func:`ordered` integer at ``offset``."""
    length = raw[offset]
    end = offset + 1 + length
    return int.from_bytes(raw[offset + 1 : end], "big"), end
