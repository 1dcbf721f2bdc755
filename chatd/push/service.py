"""Push, assembled: what the composition root (``chatd/app.py``) builds once and wires in.

- ``hook``: the messenger's outbox hook (local sends and relayed copies alike);
- ``sessions``: the session table, watched for the audience snapshot;
- ``delivered``: the transport's delivery ack (a ``msg`` frame written to a device);
- ``subscribe``/``unsubscribe``/``vapid_public_key``: the HTTP routes' calls;
- ``run``: the worker's tasks; ``samples``: its counters for ``/metrics``.
"""

from __future__ import annotations

import ssl
from typing import Any

from chatd.config import Config
from chatd.net.metrics import Sample
from chatd.push import webpush
from chatd.push.audience import Audience, Deliveries, WatchedSessions
from chatd.push.hook import PushHook
from chatd.push.subscriptions import Subscriptions
from chatd.push.worker import Worker
from storage import ReadTx, Store


class Push:
    def __init__(
        self, config: Config, store: Store, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """Read the stored subscriptions and the VAPID key (made on first start); must run on
        the trio loop (the hook keeps its token)."""
        self.audience = Audience()
        with store.env.read() as txn:
            self.audience.load(ReadTx(txn).push_sub_keys())
        self.deliveries = Deliveries()
        self.delivered = self.deliveries.delivered
        self.vapid = webpush.Vapid(config.server.data, config.push.vapid_subject)
        self.worker = Worker(
            store, config.push, self.audience, self.deliveries, self.vapid, ssl_context=ssl_context
        )
        self.hook = PushHook(self.audience, self.worker.kick)
        self.sessions = WatchedSessions(self.audience)
        self.subscriptions = Subscriptions(store, config.push, self.audience)

    async def subscribe(self, user_id: str, data: Any) -> dict[str, Any]:
        return await self.subscriptions.subscribe(user_id, data)

    async def unsubscribe(self, user_id: str, sub_id: str) -> None:
        await self.subscriptions.unsubscribe(user_id, sub_id)

    def vapid_public_key(self) -> str:
        return self.vapid.public_key

    async def run(self) -> None:
        await self.worker.run()

    def samples(self) -> list[Sample]:
        c = self.worker.counters
        return [
            Sample("chatd_push_sent_total", "counter", "push notifications delivered", c.sent),
            Sample("chatd_push_failed_total", "counter", "push notifications given up", c.failed),
            Sample("chatd_push_retried_total", "counter", "push retries scheduled", c.retried),
            Sample("chatd_push_expired_total", "counter", "push jobs expired", c.expired),
            Sample(
                "chatd_push_dropped_total",
                "counter",
                "push jobs dropped as moot (received, read or unsubscribed)",
                c.dropped,
            ),
            Sample("chatd_push_pending", "gauge", "push jobs waiting", self.worker.pending),
        ]
