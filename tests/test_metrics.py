"""GET /metrics over loopback: Prometheus text with the counters the server keeps."""

from __future__ import annotations

import re

from chatd.client import HttpClient
from chatd.server import Server
from tests.conftest import make_user


def parse(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) chatd_\w+ .+", line)
            continue
        name, value = line.split(" ")
        values[name] = float(value)
    return values


async def test_metrics_count_commits_and_connections(server: Server) -> None:
    async with HttpClient(server.url) as http:
        before = await http.request("GET", "/metrics")
        assert before.status == 200
        assert before.headers["content-type"].startswith("text/plain; version=0.0.4")
        first = parse(before.body.decode())
        alice = await make_user(server, "alice")
        await make_user(server, "bob")
        async with alice.session() as s:
            await s.send(to="bob", body="hi")
            after = parse((await http.request("GET", "/metrics")).body.decode())
            assert after["chatd_websockets"] == 1
            assert after["chatd_online_users"] == 1
    # signups, logins and the message: each a committed write, in at least one batch
    assert after["chatd_commit_ops_total"] >= first["chatd_commit_ops_total"] + 5
    assert after["chatd_commit_batches_total"] > first["chatd_commit_batches_total"]
    assert after["chatd_lmdb_used_bytes"] <= after["chatd_lmdb_map_bytes"]
