"""conf/chatd.service and conf/chatd@.service pass ``systemd-analyze verify`` (skipped where
systemd is not installed). verify checks that ExecStart is executable, so the copies point
it at this environment's ``chatd``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "conf"
INSTALLED = "/opt/chatd/.venv/bin/chatd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_units_verify(tmp_path: Path) -> None:
    chatd = Path(sys.executable).parent / "chatd"
    assert chatd.exists()
    for name in ("chatd.service", "chatd@.service"):
        text = (CONF / name).read_text()
        assert INSTALLED in text
        (tmp_path / name).write_text(text.replace(INSTALLED, str(chatd)))
    result = subprocess.run(
        ["systemd-analyze", "verify", "./chatd.service", "./chatd@s1.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    ours = [line for line in result.stderr.splitlines() if "chatd" in line]
    assert not ours, result.stderr


def test_units_say_what_the_issue_asks() -> None:
    unit = (CONF / "chatd.service").read_text()
    for directive in (
        "Type=notify",
        "WatchdogSec=",
        "LimitNOFILE=65536",
        "Restart=on-failure",
        "User=chatd",
        "StateDirectory=chatd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectHome=yes",
    ):
        assert directive in unit
    template = (CONF / "chatd@.service").read_text()
    assert "--discovery /etc/chatd/discovery.toml --shard %i" in template
    assert "StateDirectory=chatd/%i" in template
