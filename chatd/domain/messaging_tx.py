"""Storing a message: the send's unit of work, as one transaction function.

:func:`append_message` runs inside one group-commit transaction (``Store.write`` /
``Store.submit``): it replays the ack of a ref already sent, or stores the message, one inbox
entry per member, the sender's read mark, the channel's last record, the ref's ack and each
outbox hook's records, all or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chatd.domain.groups_tx import group_members
from chatd.domain.memberships_tx import join, mark_read
from chatd.domain.ports import OutboxHook, Relay
from storage import Message, WriteTx


@dataclass(frozen=True, slots=True)
class Appended:
    """What one send stored: the sender's ack and each local member's new inbox seq (none for
    a ``duplicate``: a ref already sent, whose first ack and message these are), and the
    records relayed to other shards, by shard."""

    ack: dict[str, Any]
    message: Message
    inbox: dict[str, int]
    duplicate: bool
    relayed: dict[str, bytes] = field(default_factory=dict)


def append_message(
    tx: WriteTx,
    *,
    sender: str,
    ref: str,
    channel: str,
    members: Sequence[str] | None,
    body: str,
    ts: int,
    hooks: Sequence[OutboxHook] = (),
    relay: Relay | None = None,
) -> Appended:
    """Store one message, or replay the ack of ``sender``'s ``ref`` if it was stored before.

    - ``members=None`` means a group: its members are read (and the sender's membership
      checked: NotFound, Forbidden) inside this transaction, so a concurrent add or remove is
      wholly before or after the send.
    - A 1:1 channel's first message makes both users members (their channel lists show it).
    - Every member gets an inbox entry; the sender's read mark moves to the new message.
    - Each hook's records for the message go to its outbox topic in this same transaction:
      stored exactly when the message is, never for a duplicate.
    - With a ``relay`` (a cluster), only members homed on this shard get their inbox entry
      here; each other shard gets one record listing its members (``relay.write``). A sender
      homed elsewhere gets an ack without ``inbox``: its home shard adds it when it applies
      its record (``replica_tx.apply_message``).
    """
    known = tx.ref_get(sender, ref)
    if known is not None:
        msg = tx.message_get(known["channel"], known["msg_id"])
        assert msg is not None, f"the ack of {sender}'s {ref!r} names no message"
        return Appended(known, msg, {}, duplicate=True)
    if members is None:
        members = group_members(tx, channel, sender)
    remote: dict[str, list[str]] = {}
    if relay is not None:
        members, remote = relay.split(members)
    if tx.last_msg_id(channel) == 0 and not channel.startswith("g:"):
        for user in members:
            join(tx, user, channel)
    message = Message(channel, tx.next_msg_id(channel), sender, body, ts)
    tx.message_put(message)
    inbox = tx.inbox_append_many(members, channel, message.msg_id)
    ack: dict[str, Any] = {"channel": channel, "msg_id": message.msg_id, "ts": ts}
    if sender in inbox:
        mark_read(tx, sender, channel, message.msg_id)
        ack["inbox"] = inbox[sender]
    tx.channel_last_put(channel, message.msg_id, ts)
    tx.ref_put(sender, ref, ack)
    for hook in hooks:
        for record in hook.records(channel, message.msg_id, sender, inbox):
            tx.outbox_append(hook.topic, record)
    relayed = relay.write(tx, message, remote, ref) if remote and relay is not None else {}
    return Appended(ack, message, inbox, duplicate=False, relayed=relayed)
