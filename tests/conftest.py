"""Shared fixtures: a real chatd on a loopback port with a real LMDB in a temp dir."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from chatd.client import ChatClient, HttpClient
from chatd.config import Config, LimitsConfig, SecurityConfig, ServerConfig, StorageConfig
from chatd.server import Server, serve

PASSWORD = "correct horse"


def make_config(data: Path, **sections: dict[str, Any]) -> Config:
    """A test config: port 0, data in ``data``, rate limits high unless a test sets them."""
    server = ServerConfig(listen="127.0.0.1:0", data=str(data), drain_timeout=5.0)
    limits = LimitsConfig(
        send_rate=10_000.0,
        send_burst=10_000,
        login_rate=10_000.0,
        login_burst=10_000,
        signup_rate=10_000.0,
        signup_burst=10_000,
        read_rate=10_000.0,
        read_burst=10_000,
        history_rate=10_000.0,
        history_burst=10_000,
    )
    # A 1 MiB map: with writemap the map's disk is reserved (storage/env.py Env.resize), and
    # the suite starts hundreds of servers; a test that stores more grows it like any server.
    config = Config(
        server=server,
        limits=limits,
        storage=StorageConfig(map_size=1 << 20),
        security=SecurityConfig(),
    )
    for name, changes in sections.items():
        config = dataclasses.replace(
            config, **{name: dataclasses.replace(getattr(config, name), **changes)}
        )
    return config.validate()


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Server]:
    """Run a server until the block ends, then drain it."""
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(serve, config)
        try:
            yield server
        finally:
            server.drain()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def server(data_dir: Path) -> AsyncIterator[Server]:
    async with running(make_config(data_dir)) as srv:
        yield srv


@pytest.fixture
async def http(server: Server) -> AsyncIterator[HttpClient]:
    async with HttpClient(server.url) as client:
        yield client


async def make_user(server: Server, user_id: str, password: str = PASSWORD) -> ChatClient:
    """Sign up and log in ``user_id``; returns a logged-in ChatClient."""
    client = ChatClient(server.url, user_id, password)
    await client.signup()
    await client.login()
    return client
