"""Purging records that have outlived their use: expired tokens, send refs past their window,
and (when ``storage.history_retention_days`` is set) messages and inbox entries past it.

A purge walks a whole sub-database, so it runs in chunks: each chunk is one write op (run by the
committer, in its thread) that examines at most ``limit`` records from a resume point and
deletes the ones at or below the cutoff, then returns where the next chunk starts. The event
loop only sees one op per chunk, and a chunk's transaction is as small as a few sends', so a
purge never stalls the commits queued behind it.

Resume points are bytes: a plain key for ``tokens``; for the dupsort sub-databases
(``refs``, ``messages``, ``inboxes``: see ``storage/messages.py``) the key of the next user or
channel to look at (items of one key are purged oldest first, so a key's walk always starts
at its first item).

What each purge deletes:

- ``tokens``: expired (``exp`` <= cutoff).
- ``refs``: those whose message's ts is <= cutoff, or whose message is gone.
- ``messages`` (history): a channel's leading items with ts <= cutoff (msg_id order is commit
  order, so ts order within a channel up to clock steps), and their spilled bodies.
- ``inboxes``: a user's leading entries whose message has ts <= cutoff or is gone. An entry
  whose message is kept is never deleted, nor any entry after it: the inbox keeps every seq
  from its oldest kept entry to its head (see docs/protocol.md "Retention").
- Neither deletes a channel's or an inbox's last item, however old: the last item is where
  the next msg_id or seq is counted from (there is no other counter), so ids are never reused.
"""

from __future__ import annotations

from typing import Any

from storage.codec import from_ordered, from_u48, int_key, unpack
from storage.env import Txn
from storage.messages import channel_name, message_ts, parse_inbox, ref_ts

#: The record field holding each msgpack sub-database's stamp (ms since the epoch).
STAMPS = {"tokens": "exp"}
#: The sub-databases :func:`purge_chunk` knows.
PURGEABLE = ("tokens", "refs", "messages", "inboxes")


def purge_chunk(
    txn: Txn, db: str, *, cutoff: int, start: bytes, limit: int
) -> tuple[bytes | None, int]:
    """Delete records of ``db`` stamped at or before ``cutoff`` among the next ``limit`` from
    ``start`` (b"" = the beginning); return (the next chunk's start or None at the end, how
    many were deleted)."""
    if db in STAMPS:
        return _purge_plain(txn, db, cutoff=cutoff, start=start, limit=limit)
    if db not in PURGEABLE:
        raise ValueError(f"no purge for {db!r}")
    cursor = txn.write_cursor(db)
    key, sep, item = start.partition(b"\x00")
    if sep:  # a refs walk stopped inside a user's items
        positioned = cursor.set_range_dup(key, item) or cursor.set_range(key + b"\x00")
    else:
        positioned = cursor.set_range(start) if start else cursor.first()
    deleted = examined = 0
    while positioned:
        if examined >= limit:
            return cursor.key(), deleted
        key = cursor.key()
        if db == "refs":
            n, seen, resume = _purge_refs(txn, cursor, cutoff, limit - examined)
        else:
            n, seen, resume = _purge_leading(txn, db, cursor, key, cutoff, limit - examined)
        deleted += n
        examined += seen
        if resume is not None:
            return resume, deleted
        positioned = cursor.set_range(key + b"\x00")  # the next key (keys hold no NUL)
    return None, deleted


def _purge_plain(
    txn: Txn, db: str, *, cutoff: int, start: bytes, limit: int
) -> tuple[bytes | None, int]:
    stamp = STAMPS[db]
    cursor = txn.write_cursor(db)
    positioned = cursor.set_range(start) if start else cursor.first()
    deleted = 0
    for _ in range(limit):
        if not positioned:
            return None, deleted
        record = unpack(cursor.value())
        if record.get(stamp, cutoff + 1) <= cutoff:  # a record with no stamp is kept
            cursor.delete()  # moves to the next key
            deleted += 1
            positioned = bool(cursor.key())
        else:
            positioned = cursor.next()
    return (cursor.key() if positioned else None), deleted


def _name(txn: Txn, number: int) -> str:
    """A channel number's name; "" if it has none (then its entries count as gone)."""
    try:
        return channel_name(txn, number)
    except KeyError:
        return ""


def _purge_refs(txn: Txn, cursor: Any, cutoff: int, budget: int) -> tuple[int, int, bytes | None]:
    """The refs of the cursor's user from its position, in ref order (not time order): look
    at up to ``budget``, delete the old ones. (deleted, examined, where to resume if the
    budget ran out inside this user's refs)."""
    key: bytes = cursor.key()
    items: list[bytes] = []
    ok = True
    while ok and len(items) < budget:
        items.append(cursor.value())
        ok = cursor.next_dup()
    resume = key + b"\x00" + cursor.value() if ok else None
    handle = txn.handle("refs")
    deleted = 0
    for item in items:
        try:
            ts = ref_ts(txn, item)
        except KeyError:  # a channel number with no name: nothing to answer with
            ts = None
        if ts is None or ts <= cutoff:
            txn.raw_writes().delete(key, item, db=handle)
            deleted += 1
    return deleted, len(items), resume


def _purge_leading(
    txn: Txn, db: str, cursor: Any, key: bytes, cutoff: int, budget: int
) -> tuple[int, int, bytes | None]:
    """Delete the leading items of ``key`` at or before ``cutoff`` (at most ``budget``);
    stop at the first one kept. (deleted, examined, ``key`` if the budget ran out first)."""
    deleted = examined = 0
    names: dict[int, str] = {}
    name = key.decode()
    while True:
        if examined >= budget:
            return deleted, examined, key
        item: bytes = cursor.value()
        examined += 1
        if db == "messages":
            msg_id, at = from_ordered(item)
            old = from_u48(item, at) <= cutoff
        else:
            _, number, msg_id = parse_inbox(item)
            channel = names.get(number)
            if channel is None:
                channel = names[number] = _name(txn, number)
            ts = message_ts(txn, channel, msg_id) if channel else None
            old = ts is None or ts <= cutoff
        if not old:
            return deleted, examined, None
        if not cursor.next_dup():  # the key's last item is kept: it holds the id counter
            return deleted, examined, None
        cursor.prev_dup()
        if db == "messages":
            txn.delete("bodies", int_key(name, msg_id))
        cursor.delete()
        deleted += 1
        if not cursor.set_key(key):
            return deleted, examined, None  # that was the key's last item
