"""``POST``/``DELETE /v1/push/subscriptions``: check a subscription, store it on the user's
home shard (this one: a cluster forwards every authenticated call there), tell the audience.

A webhook subscription is ``{kind: "webhook", url, secret}``, a Web Push one ``{kind:
"webpush", endpoint, keys: {p256dh, auth}}``. The URL must pass the SSRF guard (``guard.py``):
its host is resolved now and every address must be public unless ``[push]
allow_private_networks``. Subscribing the same URL or endpoint again replaces the stored one
(new secret or keys) and answers its id, so a browser may subscribe on every page load.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from chatd.config import PushConfig
from chatd.domain.accounts import now_ms
from chatd.domain.errors import BadRequest, NotFound
from chatd.push import guard, webpush
from chatd.push.audience import Audience
from storage import Store, WriteTx

SUB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_SECRET = 1024


class Subscriptions:
    def __init__(self, store: Store, config: PushConfig, audience: Audience) -> None:
        self.store = store
        self.config = config
        self.audience = audience

    async def subscribe(self, user_id: str, data: Any) -> dict[str, Any]:
        """Store a subscription of ``user_id``; ``{id, kind}``. BadRequest names what is wrong."""
        if not isinstance(data, dict):
            raise BadRequest("expected a JSON object")
        kind = data.get("kind")
        if kind == "webhook":
            url, field = data.get("url"), "url"
            secret = data.get("secret")
            if not isinstance(secret, str) or not 1 <= len(secret) <= MAX_SECRET:
                raise BadRequest(f"secret must be a string of 1 to {MAX_SECRET} characters")
            record: dict[str, Any] = {"kind": kind, "url": url, "secret": secret}
        elif kind == "webpush":
            url, field = data.get("endpoint"), "endpoint"
            try:
                keys = webpush.check_keys(data.get("keys"))
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            record = {"kind": kind, "endpoint": url, "keys": keys}
        else:
            raise BadRequest('kind must be "webhook" or "webpush"')
        allow = self.config.allow_private_networks
        try:
            await guard.resolve(guard.parse(url, allow_private=allow), allow_private=allow)
        except guard.Refused as exc:
            raise BadRequest(f"{field} {exc}") from None
        record["created_at"] = now_ms()
        most = self.config.max_subscriptions

        def put(tx: WriteTx) -> str:
            sub_id = ""
            subs = tx.push_subs(user_id)
            for known, stored in subs:
                if stored.get("kind") == kind and stored.get(field) == url:
                    sub_id = known  # the same URL again: replace it
            if not sub_id:
                if len(subs) >= most:
                    raise BadRequest(f"at most {most} push subscriptions per user")
                sub_id = secrets.token_urlsafe(12)
            tx.push_sub_put(user_id, sub_id, record)
            return sub_id

        sub_id = await self.store.write(put, lambda s: self.audience.subscribed(user_id, s))
        return {"id": sub_id, "kind": kind}

    async def unsubscribe(self, user_id: str, sub_id: str) -> None:
        """Delete one of ``user_id``'s subscriptions; NotFound if it has none of that id."""
        if not SUB_ID.fullmatch(sub_id):
            raise NotFound("no such push subscription")
        removed = await self.store.write(
            lambda tx: tx.push_sub_delete(user_id, sub_id),
            lambda gone: self.audience.unsubscribed(user_id, sub_id) if gone else None,
        )
        if not removed:
            raise NotFound("no such push subscription")
