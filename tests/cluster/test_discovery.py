"""The discovery file (chatd/cluster/discovery.py): what it accepts, what it refuses (naming the
key), rendezvous homes, ClusterRouter, and ``chatd serve --discovery``."""

from __future__ import annotations

import copy
import hashlib
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chatd.cluster.router import ClusterRouter
from chatd.config import Config, ConfigError, load
from chatd.discovery import (
    DEV_SECRET,
    SECRET_ENV,
    Discovery,
    DiscoveryError,
    Shard,
    load_discovery,
    parse_discovery,
    write_discovery,
)
from chatd.domain.ports import Place, Router

ROOT = Path(__file__).resolve().parents[2]
SECRET = "a-secret-of-at-least-16-chars"
IDS = [f"user{i}" for i in range(30_000)]


def three() -> dict[str, Any]:
    return {
        "shards": [
            {"name": f"s{i}", "url": f"http://127.0.0.1:900{i}", "peer": f"127.0.0.1:910{i}"}
            for i in (1, 2, 3)
        ],
        "broker": {"url": "redis://127.0.0.1:6379/0"},
    }


def shards(*names: str) -> Discovery:
    return Discovery(
        tuple(
            Shard(n, f"http://127.0.0.1:{9001 + i}", f"127.0.0.1:{9101 + i}")
            for i, n in enumerate(names)
        ),
        broker_url="redis://127.0.0.1:6379/0",
    )


def write(tmp_path: Path, text: str, name: str = "discovery.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


EXAMPLE_TOML = """
[[shards]]
name = "s1"
url = "http://127.0.0.1:9001"
peer = "127.0.0.1:9101"
[[shards]]
name = "s2"
url = "http://127.0.0.1:9002"
peer = "127.0.0.1:9102"
[broker]
url = "redis://127.0.0.1:6379/0"
"""


# -- what a good file gives


def test_a_good_file_parses() -> None:
    d = parse_discovery(three(), env={})
    assert d.names == ("s1", "s2", "s3")
    assert d.broker_url == "redis://127.0.0.1:6379/0"
    s1 = d.shard("s1")
    assert s1 == Shard("s1", "http://127.0.0.1:9001", "127.0.0.1:9101")
    assert s1.ws_url == "ws://127.0.0.1:9001/v1/ws"
    assert s1.listen == "127.0.0.1:9001"
    assert (s1.peer_host, s1.peer_port) == ("127.0.0.1", 9101)


def test_one_shard_needs_no_broker() -> None:
    d = parse_discovery({"shards": three()["shards"][:1]}, env={})
    assert d.broker_url == ""
    assert {d.home(i).name for i in IDS[:100]} == {"s1"}


def test_https_ipv6_paths_and_default_ports() -> None:
    data = {
        "shards": [
            {"name": "a", "url": "https://chat.example.com/s1/", "peer": "10.0.0.1:9101"},
            {"name": "b", "url": "http://[::1]:9002", "peer": "[::1]:9102"},
        ],
        "broker": {"url": "rediss://:pw@redis.example.com:6380"},
        "cluster": {"secret": SECRET},
    }
    d = parse_discovery(data, env={})
    a, b = d.shards
    assert a.url == "https://chat.example.com/s1"  # trailing slash dropped
    assert a.ws_url == "wss://chat.example.com/s1/v1/ws"
    assert a.listen == "chat.example.com:443"
    assert b.ws_url == "ws://[::1]:9002/v1/ws"
    assert b.listen == "[::1]:9002"
    assert (b.peer_host, b.peer_port) == ("::1", 9102)
    assert d.secret == SECRET


def test_the_repr_hides_the_secret_and_the_broker_password() -> None:
    data = three() | {"cluster": {"secret": SECRET}}
    data["broker"] = {"url": "redis://:hunter2hunter2@127.0.0.1:6379/0"}
    text = repr(parse_discovery(data, env={}))
    assert SECRET not in text and "hunter2" not in text


def test_the_examples_in_conf_load() -> None:
    d = load_discovery(ROOT / "conf" / "cluster.example.toml", env={})
    assert d.names == ("s1", "s2", "s3")
    assert d.secret == DEV_SECRET  # commented out, and every peer is loopback


# -- refusals name the key


def mutate(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(three())
    change(data)
    return data


def set_shard(i: int, key: str, value: Any) -> Any:
    return lambda d: d["shards"][i].__setitem__(key, value)


REFUSALS: list[tuple[str, Any, str]] = [
    ("unknown top-level key", lambda d: d.__setitem__("brokers", {}), "brokers"),
    ("unknown shard key", set_shard(0, "nmae", "x"), "shards[0].nmae"),
    ("missing name", lambda d: d["shards"][1].pop("name"), "shards[1].name"),
    ("missing url", lambda d: d["shards"][1].pop("url"), "shards[1].url"),
    ("missing peer", lambda d: d["shards"][2].pop("peer"), "shards[2].peer"),
    ("name not a string", set_shard(0, "name", 1), "shards[0].name"),
    ("empty name", set_shard(0, "name", ""), "shards[0].name"),
    ("name with a space", set_shard(0, "name", "s 1"), "shards[0].name"),
    ("duplicate name", set_shard(2, "name", "s1"), "shards[2].name"),
    ("duplicate url", set_shard(1, "url", "http://127.0.0.1:9001"), "shards[1].url"),
    ("duplicate url, respelled", set_shard(1, "url", "HTTP://127.0.0.1:9001/"), "shards[1].url"),
    ("duplicate peer", set_shard(2, "peer", "127.0.0.1:9101"), "shards[2].peer"),
    ("peer on a url's address", set_shard(1, "peer", "127.0.0.1:9001"), "shards[1].peer"),
    ("url without scheme", set_shard(0, "url", "127.0.0.1:9001"), "shards[0].url"),
    ("url not http", set_shard(0, "url", "ftp://127.0.0.1:9001"), "shards[0].url"),
    ("url without host", set_shard(0, "url", "http://:9001"), "shards[0].url"),
    ("url with a bad port", set_shard(0, "url", "http://127.0.0.1:99999"), "shards[0].url"),
    ("url with port 0", set_shard(0, "url", "http://127.0.0.1:0"), "shards[0].url"),
    ("url with a password", set_shard(0, "url", "http://u:p@127.0.0.1:1"), "shards[0].url"),
    ("url with a query", set_shard(0, "url", "http://127.0.0.1:1/?a=b"), "shards[0].url"),
    ("url with a bad host", set_shard(0, "url", "http://bad_host:1"), "shards[0].url"),
    ("peer without port", set_shard(0, "peer", "127.0.0.1"), "shards[0].peer"),
    ("peer port 0", set_shard(0, "peer", "127.0.0.1:0"), "shards[0].peer"),
    ("peer port too big", set_shard(0, "peer", "127.0.0.1:65536"), "shards[0].peer"),
    ("peer without host", set_shard(0, "peer", ":9101"), "shards[0].peer"),
    ("peer with a named port", set_shard(0, "peer", "127.0.0.1:http"), "shards[0].peer"),
    ("peer IPv6 unbracketed", set_shard(0, "peer", "::1:9101"), "shards[0].peer"),
    ("peer with a bad host", set_shard(0, "peer", "a b:9101"), "shards[0].peer"),
    ("peer as a URL", set_shard(0, "peer", "http://127.0.0.1:9101"), "shards[0].peer"),
    ("no shards", lambda d: d.pop("shards"), "shards"),
    ("empty shards", lambda d: d.__setitem__("shards", []), "shards"),
    ("shards a table", lambda d: d.__setitem__("shards", {"name": "s1"}), "shards"),
    ("two shards, no broker", lambda d: d.pop("broker"), "broker"),
    ("broker not a table", lambda d: d.__setitem__("broker", "redis://x"), "broker"),
    ("broker without url", lambda d: d.__setitem__("broker", {}), "broker.url"),
    ("broker http", lambda d: d["broker"].__setitem__("url", "http://127.0.0.1"), "broker.url"),
    ("broker unix", lambda d: d["broker"].__setitem__("url", "unix:///tmp/r"), "broker.url"),
    ("broker without host", lambda d: d["broker"].__setitem__("url", "redis://"), "broker.url"),
    ("broker bad db", lambda d: d["broker"].__setitem__("url", "redis://h:1/x"), "broker.url"),
    ("broker bad port", lambda d: d["broker"].__setitem__("url", "redis://h:x/0"), "broker.url"),
    ("unknown broker key", lambda d: d["broker"].__setitem__("pool", 4), "broker.pool"),
    ("cluster not a table", lambda d: d.__setitem__("cluster", "x"), "cluster"),
    ("unknown cluster key", lambda d: d.__setitem__("cluster", {"secrets": 1}), "cluster.secrets"),
    ("short secret", lambda d: d.__setitem__("cluster", {"secret": "short"}), "cluster.secret"),
    ("secret not a string", lambda d: d.__setitem__("cluster", {"secret": 1}), "cluster.secret"),
    ("public peer, no secret", set_shard(0, "peer", "10.0.0.5:9101"), "cluster.secret"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "key"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_bad_file_is_refused_naming_the_key(case: str, change: Any, key: str) -> None:
    with pytest.raises(DiscoveryError, match=rf"^{re.escape(key)}:"):
        parse_discovery(mutate(change), env={})


def test_duplicates_name_both_entries() -> None:
    with pytest.raises(DiscoveryError, match=r"shards\[2\]\.name: duplicate 's1' .*shards\[0\]"):
        parse_discovery(mutate(set_shard(2, "name", "s1")), env={})


def test_discovery_error_is_a_config_error() -> None:
    assert issubclass(DiscoveryError, ConfigError)


def test_an_unknown_shard_is_an_error_naming_it() -> None:
    d = parse_discovery(three(), env={})
    with pytest.raises(DiscoveryError, match=r"'nope'.*s1, s2, s3"):
        d.shard("nope")


# -- the secret


def test_loopback_peers_default_to_the_development_secret() -> None:
    assert parse_discovery(three(), env={}).secret == DEV_SECRET
    data = mutate(set_shard(0, "peer", "localhost:9101"))
    assert parse_discovery(data, env={}).secret == DEV_SECRET


def test_the_environment_overrides_the_file() -> None:
    data = mutate(lambda d: d.__setitem__("cluster", {"secret": SECRET}))
    assert parse_discovery(data, env={}).secret == SECRET
    other = "from-the-environment-0123456789"
    assert parse_discovery(data, env={SECRET_ENV: other}).secret == other
    # A public peer is fine when the environment gives the secret ...
    public = mutate(set_shard(0, "peer", "10.0.0.5:9101"))
    assert parse_discovery(public, env={SECRET_ENV: other}).secret == other
    # ... and a short one is refused naming the variable.
    with pytest.raises(DiscoveryError, match=rf"^{SECRET_ENV}:"):
        parse_discovery(public, env={SECRET_ENV: "short"})


# -- files


def test_load_discovery_names_the_file_and_the_key(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match=re.escape(str(tmp_path / "nope.toml"))):
        load_discovery(tmp_path / "nope.toml")
    with pytest.raises(DiscoveryError, match=r"bad\.toml"):
        load_discovery(write(tmp_path, "[[shards]\n", "bad.toml"))
    dup = write(tmp_path, EXAMPLE_TOML.replace('"s2"', '"s1"'), "dup.toml")
    with pytest.raises(DiscoveryError, match=r"dup\.toml: shards\[1\]\.name: duplicate 's1'"):
        load_discovery(dup)


def test_load_discovery_rereads_a_changed_file(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE_TOML)
    first = load_discovery(path, env={})
    assert load_discovery(path, env={}) is first  # checked once, handed back as checked
    path.write_text(EXAMPLE_TOML.replace("9002", "9003") + "# longer\n")
    assert load_discovery(path, env={}).shard("s2").url == "http://127.0.0.1:9003"


def test_write_discovery_round_trips(tmp_path: Path) -> None:
    listed = parse_discovery(three(), env={}).shards
    secret = 'q"uo\\te \u00e9\u2603\U0001f600\x7f-0123456789'
    path = tmp_path / "d.toml"
    written = write_discovery(path, listed, "redis://127.0.0.1:6379/0", secret)
    loaded = load_discovery(path, env={})
    assert loaded == written
    assert (loaded.shards, loaded.broker_url, loaded.secret) == (
        listed,
        "redis://127.0.0.1:6379/0",
        secret,
    )


def test_write_discovery_refuses_what_would_not_load(tmp_path: Path) -> None:
    listed = parse_discovery(three(), env={}).shards
    with pytest.raises(DiscoveryError, match="^broker:"):
        write_discovery(tmp_path / "d.toml", listed)
    assert not (tmp_path / "d.toml").exists()


# -- rendezvous homes


def blake_home(names: list[str], key: str) -> str:
    """The documented rule, written out independently of the implementation."""
    scores = [(hashlib.blake2b(f"{n}\0{key}".encode(), digest_size=8).digest(), n) for n in names]
    return max(scores)[1]


def test_home_follows_the_documented_rule() -> None:
    d = shards("s1", "s2", "s3")
    for key in IDS[:2000] + ["", "\u00e9l\u00e8ve", "dm:alice", "g:" + "x" * 300]:
        assert d.home(key).name == blake_home(["s1", "s2", "s3"], key), key


def test_a_dm_channel_is_sequenced_on_one_of_its_members_homes() -> None:
    """The documented exception: the same score, among the members' homes only."""
    names = ["s1", "s2", "s3", "s4", "s5"]
    d = shards(*names)
    pairs = [(IDS[i], IDS[i + 1]) for i in range(0, 6000, 2)]
    seen_sender_home = seen_recipient_home = 0
    for a, b in pairs:
        channel = f"dm:{min(a, b)}:{max(a, b)}"
        homes = sorted({blake_home(names, a), blake_home(names, b)})
        assert d.home(channel).name == blake_home(homes, channel), channel
        seen_sender_home += d.home(channel).name == d.home(a).name
        seen_recipient_home += d.home(channel).name == d.home(b).name
    # Either member's home, about evenly (a pair on one home counts for both).
    assert 0.4 <= seen_sender_home / len(pairs) <= 0.7
    assert 0.4 <= seen_recipient_home / len(pairs) <= 0.7


def test_adding_a_shard_moves_a_dm_channel_only_with_a_member() -> None:
    before, after = shards("s1", "s2", "s3"), shards("s1", "s2", "s3", "s4")
    pairs = list(zip(IDS[:4000:2], IDS[1:4000:2], strict=True))
    moved = 0
    for a, b in pairs:
        channel = f"dm:{min(a, b)}:{max(a, b)}"
        if before.home(channel).name != after.home(channel).name:
            moved += 1
            assert "s4" in (after.home(a).name, after.home(b).name), channel
            assert after.home(channel).name in (after.home(a).name, after.home(b).name)
    assert 0 < moved / len(pairs) <= 0.5


def test_home_is_deterministic_and_ignores_file_order() -> None:
    a, b = shards("s1", "s2", "s3"), shards("s3", "s1", "s2")
    homes = [a.home(key).name for key in IDS[:3000]]
    assert homes == [a.home(key).name for key in IDS[:3000]]
    assert homes == [b.home(key).name for key in IDS[:3000]]


def test_homes_are_roughly_uniform() -> None:
    d = shards("s1", "s2", "s3")
    counts = Counter(d.home(key).name for key in IDS)
    for name in ("s1", "s2", "s3"):
        share = counts[name] / len(IDS)
        assert abs(share - 1 / 3) <= 0.1 / 3, (name, counts)


def test_adding_a_shard_moves_about_a_quarter_all_to_it() -> None:
    before, after = shards("s1", "s2", "s3"), shards("s1", "s2", "s3", "s4")
    moved = [key for key in IDS if before.home(key).name != after.home(key).name]
    assert 0.20 <= len(moved) / len(IDS) <= 0.30
    assert {after.home(key).name for key in moved} == {"s4"}


def test_removing_a_shard_moves_only_its_keys() -> None:
    before, after = shards("s1", "s2", "s3", "s4"), shards("s1", "s2", "s4")
    for key in IDS[:5000]:
        if before.home(key).name != "s3":
            assert after.home(key).name == before.home(key).name


# -- ClusterRouter


def test_cluster_router_places() -> None:
    d = parse_discovery(three(), env={})
    router: Router = ClusterRouter(d, "s2")
    assert isinstance(router, ClusterRouter)
    seen = set()
    for key in IDS[:300]:
        home = d.home(key)
        place = router.home(key)
        assert place == Place(local=home.name == "s2", shard=home.name, url=home.ws_url)
        assert router.sequencer(key) == place  # one rule for users and channels
        seen.add(place.local)
    assert seen == {True, False}
    assert router.here == "s2"
    assert router.shards() == ["s1", "s3"]
    assert router.peer("s3") == ("127.0.0.1", 9103)
    with pytest.raises(DiscoveryError, match="'s9'"):
        router.peer("s9")


def test_cluster_router_refuses_an_unlisted_here() -> None:
    with pytest.raises(DiscoveryError, match="'s9'"):
        ClusterRouter(parse_discovery(three(), env={}), "s9")


def test_one_shard_router_is_all_local() -> None:
    d = parse_discovery({"shards": three()["shards"][:1]}, env={})
    router = ClusterRouter(d, "s1")
    assert router.home("anyone").local and router.sequencer("any channel").local
    assert router.shards() == []


# -- config and the chatd command


def test_load_with_discovery_takes_listen_and_public_url_from_the_shard(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE_TOML)
    config = load(None, discovery=path, shard="s2")
    assert config.cluster.discovery == str(path)
    assert config.server.listen == "127.0.0.1:9002"
    assert config.server.public_url == "http://127.0.0.1:9002"
    d = config.discovery()
    assert d is not None and d.names == ("s1", "s2")
    assert Config().discovery() is None  # no discovery file: one process, no broker


def test_listen_flag_and_a_configured_public_url_win(tmp_path: Path) -> None:
    discovery = write(tmp_path, EXAMPLE_TOML)
    conf = write(
        tmp_path,
        f'[server]\nlisten = "127.0.0.1:1"\npublic_url = "https://chat.example"\n'
        f'[cluster]\ndiscovery = "{discovery}"\n',
        "chatd.toml",
    )
    config = load(conf, shard="s1")
    assert config.server.listen == "127.0.0.1:9001"  # the file's listen does not: one file
    assert config.server.public_url == "https://chat.example"  # serves every shard
    config = load(conf, shard="s1", listen="0.0.0.0:7000")
    assert config.server.listen == "0.0.0.0:7000"


def test_load_with_discovery_needs_a_listed_shard(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE_TOML)
    with pytest.raises(ConfigError, match=r"^server\.shard: required"):
        load(None, discovery=path)
    with pytest.raises(ConfigError, match=r"^server\.shard: .*'nope'"):
        load(None, discovery=path, shard="nope")
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "missing.toml"))):
        load(None, discovery=tmp_path / "missing.toml", shard="s1")


def run_chatd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    return subprocess.run(
        [sys.executable, "-m", "chatd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize(
    ("text", "args", "named"),
    [
        (EXAMPLE_TOML, ["--shard", "nope"], "'nope'"),
        (EXAMPLE_TOML, [], "server.shard"),
        (EXAMPLE_TOML.replace('"s2"', '"s1"'), ["--shard", "s1"], "shards[1].name"),
        (EXAMPLE_TOML.replace("[broker]\n", "[brokr]\n"), ["--shard", "s1"], "brokr"),
        (EXAMPLE_TOML.replace("redis://", "http://"), ["--shard", "s1"], "broker.url"),
    ],
)
def test_serve_refuses_a_bad_discovery_with_status_2(
    tmp_path: Path, text: str, args: list[str], named: str
) -> None:
    path = write(tmp_path, text)
    result = run_chatd(
        "serve", "--discovery", str(path), *args, "--data", str(tmp_path / "d"), cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()  # refused before touching storage
