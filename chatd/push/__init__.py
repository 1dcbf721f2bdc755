"""Push notifications for offline recipients (issue 13; docs/api.md "Push").

- ``subscriptions.py``: ``POST``/``DELETE /v1/push/subscriptions``: validation, the SSRF guard
  (``guard.py``), storage on the user's home shard.
- ``audience.py``: who a message may push to (offline users with subscriptions), published to
  the writer thread as an immutable snapshot; which inbox seq each user's devices received.
- ``hook.py``: the outbox hook that stores one job per subscription in the message's commit.
- ``worker.py``: the tasks that send jobs: collapse, retries with backoff, expiry, moot jobs.
- ``webhook.py`` and ``webpush.py``: the two providers; ``client.py``: one HTTP/1.1 POST on
  trio and h11.
"""
