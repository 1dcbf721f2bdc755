"""``python -m bench storage`` end to end at a tiny size: it stores DMs through the real write
path and counts every sub-database's pages (the figure of issue 19 comes from it)."""

from __future__ import annotations

from bench.storage import measure


def test_storage_bench_counts_pages_per_message() -> None:
    result = measure(messages=2000, pairs=10, body=100, window=16)
    per = result["bytes_per_message"]
    assert result["pages"]["messages"]["entries"] == 2000
    assert result["pages"]["inboxes"]["entries"] == 4000  # two per DM
    assert result["pages"]["refs"]["entries"] == 2000
    assert {"messages", "inboxes", "refs"} <= per.keys()
    # 200 DMs per channel: the fixed cost per channel and user still shows, but the body
    # (100 bytes) and its item dominate
    assert 100 < per["messages"] < 200
    assert result["bytes_per_message_total"] == round(sum(per.values()), 1)
