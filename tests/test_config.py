"""chatd.config: defaults, TOML loading, refusal of unknown keys and bad values (naming the key),
CLI overrides, and the ``chatd serve`` exit status on a bad config (CONTRACT.md, "Operator
interface")."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatd.config import Config, ConfigError, from_mapping, load

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "conf" / "chatd.toml"
CONTRACT_LIMITS = {
    "send_rate": 20.0,
    "send_burst": 100,
    "login_rate": 0.05,
    "login_burst": 5,
    "signup_rate": 0.05,
    "signup_burst": 5,
    "max_sessions_per_user": 10,
    "max_group_members": 100,
}


def write(tmp_path: Path, text: str, name: str = "chatd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def all_keys() -> list[tuple[str, str]]:
    return [
        (section.name, key.name)
        for section in dataclasses.fields(Config)
        for key in dataclasses.fields(getattr(Config(), section.name))
    ]


# -- defaults


def test_defaults_are_valid() -> None:
    config = Config()
    assert config.validate() is config
    assert load() == config
    assert from_mapping({}) == config


def test_defaults_match_the_contract() -> None:
    config = Config()
    assert config.server.listen == "127.0.0.1:8080"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.server.data == "./var/chatd"
    assert config.server.drain_timeout == 10.0
    assert config.server.hello_timeout == 10.0
    assert config.limits.max_request_body == 1 << 20
    assert config.limits.max_frame_bytes == 1 << 20
    assert config.limits.max_body_chars == 100_000
    for key, value in CONTRACT_LIMITS.items():
        assert getattr(config.limits, key) == value, key


def test_the_contracts_push_key_is_accepted() -> None:
    assert Config().push.allow_private_networks is False
    config = from_mapping({"push": {"allow_private_networks": True}})
    assert config.push.allow_private_networks is True
    with pytest.raises(ConfigError, match="push.allow_private_networks"):
        from_mapping({"push": {"allow_private_networks": "yes"}})


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.limits.send_rate = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server = config.server  # type: ignore[misc]


def test_replace_changes_one_section_and_validates() -> None:
    config = Config()
    changed = config.replace("limits", send_rate=5.0)
    assert changed.limits.send_rate == 5.0
    assert changed.server == config.server
    assert config.limits.send_rate == 20.0
    with pytest.raises(ConfigError, match=r"limits\.send_rate"):
        config.replace("limits", send_rate=-5.0)


# -- from_mapping and load


def test_from_mapping_sets_keys_in_every_section() -> None:
    config = from_mapping(
        {
            "server": {"listen": "0.0.0.0:9000", "allowed_origins": ["https://a.example"]},
            "limits": {"send_rate": 3.5, "login_burst": 7},
            "storage": {"sync": False, "unsafe_fast_commit": True, "max_batch": 10},
            "security": {"token_ttl_days": 1.5, "hash_threads": 4},
        }
    )
    assert config.server.listen == "0.0.0.0:9000" and config.server.port == 9000
    assert config.server.allowed_origins == ("https://a.example",)
    assert config.limits.send_rate == 3.5 and config.limits.login_burst == 7
    assert config.storage.sync is False and config.storage.max_batch == 10
    assert config.security.token_ttl_days == 1.5 and config.security.hash_threads == 4
    # Keys not given keep their defaults.
    assert config.limits.send_burst == Config().limits.send_burst
    assert config.server.data == Config().server.data


def test_from_mapping_widens_ints_to_floats() -> None:
    config = from_mapping({"limits": {"send_rate": 20}, "server": {"drain_timeout": 3}})
    assert config.limits.send_rate == 20.0 and isinstance(config.limits.send_rate, float)
    assert isinstance(config.server.drain_timeout, float)


def test_from_mapping_starts_from_base() -> None:
    base = from_mapping({"limits": {"send_rate": 1.0}})
    config = from_mapping({"limits": {"send_burst": 3}}, base)
    assert (config.limits.send_rate, config.limits.send_burst) == (1.0, 3)


def test_load_reads_a_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [server]
        listen = "127.0.0.1:9001"
        data = "/srv/chatd"
        allowed_origins = ["https://chat.example", "http://localhost:3000"]
        drain_timeout = 2.5

        [limits]
        send_rate = 20      # an integer is fine for a float key
        send_burst = 100
        login_rate = 0.05
        max_group_members = 50

        [storage]
        sync = false
        unsafe_fast_commit = true

        [security]
        token_ttl_days = 7
        """,
    )
    for source in (path, str(path)):
        config = load(source)
        assert config.server.listen == "127.0.0.1:9001"
        assert config.server.data == "/srv/chatd"
        assert config.server.allowed_origins == ("https://chat.example", "http://localhost:3000")
        assert config.server.drain_timeout == 2.5
        assert config.limits.send_rate == 20.0
        assert config.limits.max_group_members == 50
        assert config.storage.sync is False
        assert config.security.token_ttl_days == 7.0


def test_load_empty_file_is_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, "")) == Config()


def test_every_key_can_be_set_from_toml(tmp_path: Path) -> None:
    """Writing each key back with its default value loads: no key is unreachable from TOML."""
    defaults = Config()
    lines = []
    for section in dataclasses.fields(Config):
        lines.append(f"[{section.name}]")
        for key in dataclasses.fields(getattr(defaults, section.name)):
            value = getattr(getattr(defaults, section.name), key.name)
            if isinstance(value, bool):
                literal = "true" if value else "false"
            elif isinstance(value, str):
                literal = f'"{value}"'
            elif isinstance(value, tuple):
                literal = "[" + ", ".join(f'"{v}"' for v in value) + "]"
            else:
                literal = repr(value)
            lines.append(f"{key.name} = {literal}")
    assert load(write(tmp_path, "\n".join(lines))) == defaults


# -- refusals name the key


def test_unknown_section_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^limit\b"):
        from_mapping({"limit": {"send_rate": 1.0}})


def test_unknown_key_is_refused_with_its_full_name() -> None:
    with pytest.raises(ConfigError, match=r"limits\.send_rat\b"):
        from_mapping({"limits": {"send_rat": 1.0}})


@pytest.mark.parametrize(("section", "key"), all_keys())
def test_a_misspelled_key_in_any_section_is_refused(section: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{section}.{key}x")):
        from_mapping({section: {key + "x": 1}})


def test_unknown_key_in_a_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nsend_rate = 1.0\nsend_rat = 2.0\n")
    with pytest.raises(ConfigError, match=r"limits\.send_rat\b"):
        load(path)


def test_section_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^limits\b"):
        load(write(tmp_path, "limits = 5\n"))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        # wrong types
        ("limits", "send_rate", "fast"),
        ("limits", "send_rate", True),
        ("limits", "send_rate", [1.0]),
        ("limits", "send_burst", 1.5),
        ("limits", "send_burst", "100"),
        ("limits", "send_burst", False),
        ("server", "listen", 8080),
        ("server", "data", 1),
        ("server", "allowed_origins", "https://a.example"),
        ("server", "allowed_origins", [1, 2]),
        ("server", "max_connections", 10.0),
        ("storage", "sync", 1),
        ("storage", "sync", "yes"),
        ("storage", "map_size", {"a": 1}),
        ("security", "hash_threads", None),
        # out of range
        ("limits", "send_rate", -1.0),
        ("limits", "send_rate", 0),
        ("limits", "send_rate", math.nan),
        ("limits", "send_rate", math.inf),
        ("limits", "login_burst", -5),
        ("limits", "max_sessions_per_user", 0),
        ("limits", "max_request_body", -1),
        ("server", "drain_timeout", -1.0),
        ("server", "keepalive_timeout", 0),
        ("server", "max_connections", 0),
        ("storage", "max_batch", 0),
        ("security", "token_ttl_days", -1),
        ("security", "hash_threads", 0),
        # malformed values
        ("server", "listen", "localhost"),
        ("server", "listen", "127.0.0.1:"),
        ("server", "listen", ":8080"),
        ("server", "listen", "127.0.0.1:http"),
        ("server", "listen", "127.0.0.1:65536"),
        ("server", "listen", "127.0.0.1:-1"),
        ("server", "listen", ""),
        ("server", "public_url", "chat.example.com"),
        ("server", "public_url", "ftp://chat.example.com"),
    ],
)
def test_bad_value_is_refused_naming_the_key(section: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{section}.{key}")):
        from_mapping({section: {key: value}})


def test_bad_value_in_a_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    for text, name in (
        ("[limits]\nsend_burst = -3\n", "limits.send_burst"),
        ('[limits]\nsend_rate = "20"\n', "limits.send_rate"),
        ("[limits]\nlogin_rate = nan\n", "limits.login_rate"),
        ("[limits]\nsignup_rate = inf\n", "limits.signup_rate"),
        ('[server]\nlisten = "nowhere"\n', "server.listen"),
        ("[storage]\nsync = 0\n", "storage.sync"),
    ):
        with pytest.raises(ConfigError, match=re.escape(name)):
            load(write(tmp_path, text))


def test_empty_data_dir_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"server\.data"):
        from_mapping({"server": {"data": ""}})


def test_argon2_below_the_owasp_minimum_is_refused() -> None:
    weak = {"argon2_memory_kib": 1024, "argon2_time_cost": 1}
    with pytest.raises(ConfigError, match=r"security\.argon2_memory_kib"):
        from_mapping({"security": weak})
    # OWASP's other equivalent settings are allowed.
    config = from_mapping({"security": {"argon2_memory_kib": 7168, "argon2_time_cost": 5}})
    assert config.security.argon2_memory_kib == 7168


def test_max_map_size_below_map_size_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"storage\.max_map_size"):
        from_mapping({"storage": {"map_size": 1 << 30, "max_map_size": 1 << 20}})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load(path)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits\nsend_rate = \n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load(path)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# -- command-line overrides


def test_cli_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nlisten = "127.0.0.1:9001"\ndata = "/from/file"\nshard = "s1"\n'
        "[limits]\nsend_rate = 3.0\n",
    )
    config = load(path, listen="0.0.0.0:7000", data="/from/cli")
    assert config.server.listen == "0.0.0.0:7000"
    assert config.server.data == "/from/cli"
    assert config.server.shard == "s1"  # not overridden
    assert config.limits.send_rate == 3.0


def test_cli_overrides_given_as_none_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:9001"\n')
    config = load(path, listen=None, data=None, shard=None)
    assert config.server.listen == "127.0.0.1:9001"
    assert config.server.data == Config().server.data


def test_cli_overrides_without_a_file(tmp_path: Path) -> None:
    config = load(None, listen="127.0.0.1:0", data=str(tmp_path), shard="s2")
    assert (config.server.port, config.server.data, config.server.shard) == (0, str(tmp_path), "s2")


def test_cli_overrides_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"server\.listen"):
        load(None, listen="not-an-address")


def test_cli_override_can_fix_a_bad_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = "broken"\n')
    with pytest.raises(ConfigError, match=r"server\.listen"):
        load(path)
    assert load(path, listen="127.0.0.1:1234").server.port == 1234


# -- the documented example


def test_example_config_loads() -> None:
    if not EXAMPLE.exists():
        pytest.skip("conf/chatd.toml is not written yet")
    config = load(EXAMPLE)
    assert isinstance(config, Config)
    text = EXAMPLE.read_text()
    # The contract fixes these keys; the documented example shows every one of them.
    for key in CONTRACT_LIMITS:
        assert re.search(rf"^\s*#?\s*{key}\s*=", text, re.MULTILINE), key


# -- the chatd command


def run_chatd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_serve_with_an_unknown_key_exits_2_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nsend_rat = 5.0\n")
    result = run_chatd("serve", "--config", str(path), "--data", str(tmp_path / "d"), cwd=tmp_path)
    assert result.returncode == 2
    assert "limits.send_rat" in result.stderr
    assert "listening" not in result.stderr
    assert not (tmp_path / "d").exists()  # refused before touching storage


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["--config", "{bad_value}"], "limits.send_burst"),
        (["--config", "{missing}"], "missing.toml"),
        (["--listen", "nowhere"], "server.listen"),
    ],
)
def test_serve_refuses_bad_config_with_status_2(tmp_path: Path, args: list[str], name: str) -> None:
    bad_value = write(tmp_path, "[limits]\nsend_burst = -1\n")
    paths = {"bad_value": str(bad_value), "missing": str(tmp_path / "missing.toml")}
    argv = [arg.format(**paths) for arg in args]
    result = run_chatd("serve", *argv, "--data", str(tmp_path / "d"), cwd=tmp_path)
    assert result.returncode == 2
    assert name in result.stderr


def test_serve_on_a_busy_port_exits_1_with_a_one_line_message(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_chatd(
            "serve", "--listen", f"127.0.0.1:{port}", "--data", str(tmp_path / "d"), cwd=tmp_path
        )
    assert result.returncode == 1
    assert "chatd: cannot start:" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_uses_the_file_with_cli_overrides_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    path = write(tmp_path, f'[server]\nlisten = "127.0.0.1:0"\ndata = "{tmp_path / "from_file"}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatd", "serve", "--config", str(path)]
        + ["--data", str(tmp_path / "from_cli")],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stderr is not None
        line = ""
        while "listening" not in line:
            ready, _, _ = select.select([proc.stderr], [], [], 30)
            assert ready, "chatd did not start within 30 s"
            line = proc.stderr.readline()
            assert line, "chatd exited before listening"
        assert re.search(r"chatd listening on http://127\.0\.0\.1:\d+$", line.strip()), line
        assert (tmp_path / "from_cli").is_dir()
        assert not (tmp_path / "from_file").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


# -- the cluster section (issue 11)


def test_no_discovery_file_means_one_process() -> None:

    assert Config().cluster.discovery == ""
    assert load().discovery() is None


def test_the_example_config_is_the_defaults() -> None:
    assert load(EXAMPLE) == Config()


def test_cluster_discovery_is_read_from_the_file_and_the_flag(tmp_path: Path) -> None:
    discovery = write(
        tmp_path,
        '[[shards]]\nname = "a"\nurl = "http://127.0.0.1:9301"\npeer = "127.0.0.1:9401"\n',
        "discovery.toml",
    )
    from_file = load(write(tmp_path, f'[cluster]\ndiscovery = "{discovery}"\n'), shard="a")
    from_flag = load(None, discovery=str(discovery), shard="a")
    assert from_file == from_flag
    assert from_flag.cluster.discovery == str(discovery)
    assert from_flag.server.listen == "127.0.0.1:9301"
    with pytest.raises(ConfigError, match=r"cluster\.discovery"):
        from_mapping({"cluster": {"discovery": 1}})
    with pytest.raises(ConfigError, match=r"server\.shard"):
        from_mapping({"cluster": {"discovery": str(discovery)}})


def test_an_outbound_queue_below_64_kib_is_refused() -> None:
    with pytest.raises(ConfigError, match="outbound_queue_bytes: must be at least 65536"):
        from_mapping({"limits": {"outbound_queue_bytes": 65535}})
    config = from_mapping({"limits": {"outbound_queue_bytes": 65536}})
    assert config.limits.outbound_queue_bytes == 65536
