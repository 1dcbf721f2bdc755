"""The ``webhook`` provider: a signed JSON POST a receiver (an APNs/FCM relay, ntfy, Gotify, a
bot) can verify with the subscription's secret.

Body: ``{user_id, channel, msg_id, from, preview, ts, count}`` (compact UTF-8 JSON);
header ``X-Chatd-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes, keyed with the
secret's UTF-8 bytes>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

PREVIEW_CHARS = 120  # characters of the body a notification carries


def payload(
    user: str, channel: str, msg_id: int, sender: str, body: str, ts: int, count: int
) -> dict[str, Any]:
    """What both providers send about the newest message of a collapsed run of ``count``."""
    preview = body if len(body) <= PREVIEW_CHARS else body[: PREVIEW_CHARS - 1] + "…"
    return {
        "user_id": user,
        "channel": channel,
        "msg_id": msg_id,
        "from": sender,
        "preview": preview,
        "ts": ts,
        "count": count,
    }


def body(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def request(sub: dict[str, Any], data: dict[str, Any]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(body, headers) of the POST to ``sub["url"]``."""
    raw = body(data)
    headers = [
        (b"content-type", b"application/json"),
        (b"x-chatd-signature", signature(sub["secret"], raw).encode()),
    ]
    return raw, headers
