"""What shards send each other through Redis: msgpack records.

A stream entry's payload is ``["m", origin, seq, record]`` (a message relayed by its
sequencer ``origin``; ``seq`` is the record's key in the origin's outbox) or
``["c", shard, [seq, ...]]`` (``shard`` applied those records of the receiver's outbox: it
may delete them). A message record is a msgpack map ``{c, i, p, f, b, t, u, r}``: channel,
msg_id, the msg_id relayed to the same shard before (``p``, 0 for none), sender, body, ts, the
members homed on the destination, and the sender's ref when the sender is homed there. The
same envelope carries ``"f"`` records (``{u, o, s}``: set user ``u``'s friendship row about
``o`` to state ``s``, None deletes it) and ``"g"`` records (``{c, v, g, u}``: version ``v`` of
group ``c``'s record ``g``, and the members or former members ``u`` homed on the destination).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from storage import Message

MESSAGE, CONFIRM, FRIEND, GROUP = "m", "c", "f", "g"


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


@dataclass(frozen=True, slots=True)
class Relayed:
    """A decoded message record, with where it came from."""

    origin: str
    seq: int
    message: Message
    prev: int
    members: tuple[str, ...]
    ref: str


def message_record(
    message: Message, *, prev: int, members: Sequence[str], ref: str
) -> dict[str, Any]:
    return {
        "c": message.channel,
        "i": message.msg_id,
        "p": prev,
        "f": message.sender,
        "b": message.body,
        "t": message.ts,
        "u": list(members),
        "r": ref,
    }


@dataclass(frozen=True, slots=True)
class Op:
    """A decoded friendship (``FRIEND``) or group (``GROUP``) record."""

    kind: str
    origin: str
    seq: int
    data: dict[str, Any]


def message_payload(origin: str, seq: int, record: dict[str, Any], kind: str = MESSAGE) -> bytes:
    return pack([kind, origin, seq, record])


def confirm_payload(shard: str, seqs: Sequence[int]) -> bytes:
    return pack([CONFIRM, shard, list(seqs)])


def decode(payload: bytes) -> Relayed | Op | tuple[str, list[int]]:
    """A message record, an op, or ``(shard, seqs)`` of a confirmation; ValueError if
    malformed."""
    try:
        kind, who, *rest = unpack(payload)
        if kind == CONFIRM:
            return str(who), [int(s) for s in rest[0]]
        if kind in (FRIEND, GROUP):
            seq, data = rest
            if not isinstance(data, dict):
                raise ValueError("an op's record must be a map")
            return Op(kind, str(who), int(seq), data)
        if kind != MESSAGE:
            raise ValueError(f"unknown record kind {kind!r}")
        seq, r = rest
        message = Message(r["c"], int(r["i"]), r["f"], r["b"], int(r["t"]))
        return Relayed(str(who), int(seq), message, int(r["p"]), tuple(r["u"]), r["r"])
    except (TypeError, KeyError, ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed cluster record: {exc}") from None
