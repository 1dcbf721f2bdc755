"""Domain tests: services on a real temporary LMDB with fake device sinks, no sockets."""

from __future__ import annotations

import pytest
import trio.testing


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    # pytest-trio runs a test under a Clock found among its arguments. Virtual time jumps once
    # the loop has idled for 10 real ms (while the committer's thread works, say); tests move
    # it on purpose with ``mock_clock.jump``.
    return trio.testing.MockClock(autojump_threshold=0.01)
