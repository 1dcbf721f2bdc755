"""Applying a message sequenced on another shard: the destination's unit of work.

A channel's sequencer shard stores its messages and relays each one to every other shard that
homes some of its members (``chatd/cluster/``). The destination stores a copy of the message
(so inbox replay and the channel list read locally) and one inbox entry per member it homes, in
one transaction. Records may arrive twice or out of order; the message's key makes applying
idempotent and ``prev`` (the msg_id the sequencer relayed to this shard before) keeps each
channel in msg_id order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatd.domain.memberships_tx import join, mark_read
from chatd.domain.ports import OutboxHook
from storage import Group, Message, WriteTx

APPLIED, DUPLICATE, EARLY = "applied", "duplicate", "early"


@dataclass(frozen=True, slots=True)
class Replicated:
    """A relayed message and what applying it did: ``outcome`` is APPLIED (stored now, with
    ``inbox`` seqs and the sender's ``ack`` if the sender is homed here), DUPLICATE (stored
    before) or EARLY (its predecessor ``prev`` is not here yet: apply it later)."""

    outcome: str
    message: Message
    inbox: dict[str, int]
    ack: dict[str, Any] | None = None


def apply_message(
    tx: WriteTx,
    message: Message,
    *,
    prev: int,
    members: Sequence[str],
    ref: str,
    hooks: Sequence[OutboxHook] = (),
) -> Replicated:
    """Store ``message`` for ``members`` (homed on this shard), once and in channel order.

    Members join the channel first (a 1:1 channel's first message, or a group whose
    membership record is still on its way), so the message counts as unread for them. A
    sender among ``members`` gets its inbox entry and read mark like any send, and its
    ``ref`` the ack a resend to this shard answers with. Each outbox hook's records (push
    notifications for the members homed here) are stored with the copy, as a local send's are.
    """
    channel, msg_id = message.channel, message.msg_id
    if tx.message_get(channel, msg_id) is not None:
        return Replicated(DUPLICATE, message, {})
    if prev and tx.message_get(channel, prev) is None:
        return Replicated(EARLY, message, {})
    for user in members:
        join(tx, user, channel)
    tx.message_put(message)
    inbox = {user: tx.inbox_append(user, channel, msg_id) for user in members}
    ack = None
    if message.sender in inbox:
        mark_read(tx, message.sender, channel, msg_id)
        ack = {"channel": channel, "msg_id": msg_id, "ts": message.ts}
        ack["inbox"] = inbox[message.sender]
        if ref:
            tx.ref_put(message.sender, ref, ack)
    if msg_id > tx.channel_last(channel)[0]:
        tx.channel_last_put(channel, msg_id, message.ts)
    for hook in hooks:
        for record in hook.records(channel, msg_id, message.sender, inbox):
            tx.outbox_append(hook.topic, record)
    return Replicated(APPLIED, message, inbox, ack)


def apply_group(
    tx: WriteTx,
    channel: str,
    group: Group,
    *,
    version: int,
    users: Sequence[str],
    version_key: str,
) -> bool:
    """Version ``version`` of a group's record from its sequencer shard, for ``users`` (its
    members, or members it just lost, homed here): members join (the channel list shows the
    group), former members leave. An older version than the one here changes nothing (False).
    """
    if version <= tx.relay_last(channel, version_key):
        return False
    tx.relay_set(channel, version_key, version)
    tx.group_put(channel, group)
    for user in users:
        if user in group.members:
            join(tx, user, channel)
        else:
            tx.membership_delete(user, channel)
    return True
