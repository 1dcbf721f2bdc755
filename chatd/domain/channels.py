"""Channel ids and membership.

``dm:<a>:<b>`` is the 1:1 channel of users a < b (string order); its members are in its id.
``g:<id>`` channels are groups; their members live in storage (``chatd/groups.py``).
"""

from __future__ import annotations

import re
import secrets

from chatd.domain import validate
from chatd.domain.errors import BadRequest, Forbidden, NotFound
from storage import Store

GROUP_ID = re.compile(r"g:[A-Za-z0-9_-]{8,26}")


def new_group_id() -> str:
    return "g:" + secrets.token_urlsafe(12)


def is_group(channel: str) -> bool:
    return channel.startswith("g:")


def dm_channel(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return f"dm:{lo}:{hi}"


def dm_members(channel: str) -> list[str] | None:
    """The two users of a well-formed dm channel id, else None."""
    kind, _, rest = channel.partition(":")
    a, sep, b = rest.partition(":")
    valid = validate.USER_ID.fullmatch(a) and validate.USER_ID.fullmatch(b)
    if kind != "dm" or not sep or not valid or not a < b:
        return None
    return [a, b]


def members(store: Store, channel: str) -> list[str]:
    """Members of ``channel``; BadRequest for a malformed dm id, NotFound for an id no channel
    can have, Forbidden for an unknown group (as for a group one is not in)."""
    if not isinstance(channel, str) or not channel:
        raise BadRequest("channel must be a non-empty string")
    users = dm_members(channel)
    if users is not None:
        return users
    if channel.startswith("dm:"):
        raise BadRequest(f"malformed channel id {channel!r}")
    if not GROUP_ID.fullmatch(channel):
        raise NotFound(f"no channel {channel!r}")  # no such id can exist: nothing to probe
    group = store.group(channel)
    if group is None:
        raise not_a_member(channel)
    return list(group.members)


def not_a_member(channel: str) -> Forbidden:
    """The refusal for a group one is not in, and the very same for a well-formed group id
    that does not exist, so an outsider cannot tell the two apart (ids are not secrets)."""
    return Forbidden(f"you are not a member of {channel}")


def check_member(store: Store, channel: str, user_id: str) -> list[str]:
    """Members of ``channel`` if ``user_id`` is one of them; Forbidden otherwise.

    A 1:1 channel's members are named by its id, so its other user must also be an account
    (NotFound otherwise, as for a send ``to`` an unknown user): nothing is ever stored, read or
    relayed for an id nobody has signed up with.
    """
    users = members(store, channel)
    if user_id not in users:
        raise not_a_member(channel)
    if (
        not is_group(channel)
        and store.membership(user_id, channel) is None
        and not store.channel_last_id(channel)
    ):
        # No message yet (a message makes both members): the other must be an account. In a
        # cluster an account homed elsewhere is not here, but then a message was exchanged
        # (and is here, on the channel's sequencer or on a member's home).
        for other in users:
            if other != user_id and store.account(other) is None:
                raise NotFound(f"no user {other!r}")
    return users
