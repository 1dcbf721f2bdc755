"""Fixtures of the cluster tests: a real redis-server per test, in the test's tmp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.redis import RedisServer
from tests.cluster.shards import Shards


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def shards(tmp_path: Path, redis_server: RedisServer) -> Iterator[Shards]:
    """Three shards on one real Redis."""
    cluster = Shards(tmp_path / "cluster", 3, redis_server.url)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop_all()
