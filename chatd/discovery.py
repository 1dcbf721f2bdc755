"""The discovery file: which shards make up the cluster, where each one is, and which shard is a
user's (or a channel's) home.

The file is TOML, read once at start-up and refused with a message naming the key when it is
wrong, because a mistake here (two shards with one name, a typo in a URL) would split users
between shards silently::

    [[shards]]
    name = "s1"
    url = "http://127.0.0.1:9001"     # public base: HTTP API, and WebSocket at /v1/ws
    peer = "127.0.0.1:9101"           # where the other shards reach this one
    [broker]
    url = "redis://127.0.0.1:6379/0"  # Redis 7+ (or Valkey); required with two or more shards
    [cluster]
    secret = "..."                    # authenticates peer traffic; env CHATD_CLUSTER_SECRET wins

Homes are chosen by rendezvous (highest-random-weight) hashing, so adding a shard moves only
the keys the new shard wins (about 1/N of them) and removing one moves only its own keys::

    score(shard, key) = blake2b(shard.name + "\\0" + key, digest_size=8) as a big-endian integer
    home(key)         = the shard with the highest score (equal scores: the greater name)

One exception keeps 1:1 chat one hop long: a 1:1 channel ``dm:<a>:<b>`` is placed by the same
score, but only among its two members' homes (one shard if they share it). Its sequencer is
then always the sender's home or the recipient's, never a third shard. Adding or removing a
shard moves such a channel only if one of its members moves (it may then go to the other
member's home): a re-shard moves more 1:1 channels than 1/N, which ``chatd reshard`` handles
like any other sequencer change, for one hop less on every cross-shard 1:1 message.

The function depends only on the shard names and the key (never on the order of the file, the
URLs or the process), so every shard, and any tool, computes the same home.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chatd.config_errors import ConfigError

#: The environment variable that overrides ``[cluster] secret``.
SECRET_ENV = "CHATD_CLUSTER_SECRET"
#: The secret used when none is set and every peer address is loopback: a cluster on one
#: machine works out of the box, and a cluster that can be reached from outside cannot use it.
DEV_SECRET = "chatd-development-secret-loopback-only"
#: A configured secret must be at least this long (an HMAC key guessed offline is game over).
MIN_SECRET_CHARS = 16
#: How many keys' homes each Discovery remembers (home() runs once per message).
HOME_CACHE_SIZE = 100_000

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")
_DB = re.compile(r"/?(?:\d+)?\Z")


class DiscoveryError(ConfigError):
    """The discovery file is missing, malformed or inconsistent; the message names the key."""


@dataclass(frozen=True)
class Shard:
    """One shard as the discovery file lists it."""

    name: str
    url: str  #: public base URL (http:// or https://), no trailing slash
    peer: str  #: HOST:PORT the other shards connect to

    @cached_property
    def ws_url(self) -> str:
        """The WebSocket URL clients of this shard use (the wrong_shard answer carries it)."""
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/v1/ws"

    @cached_property
    def listen(self) -> str:
        """HOST:PORT taken from the url: where this shard listens unless ``--listen`` says."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{_bracket(host)}:{port}"

    @cached_property
    def peer_host(self) -> str:
        return _split_hostport(self.peer)[0]

    @cached_property
    def peer_port(self) -> int:
        return _split_hostport(self.peer)[1]


@dataclass(frozen=True)
class Discovery:
    """The parsed discovery file. ``secret`` and ``broker_url`` stay out of ``repr`` (logs)."""

    shards: tuple[Shard, ...]
    broker_url: str = field(default="", repr=False)  #: "" only when there is one shard
    secret: str = field(default=DEV_SECRET, repr=False)
    _by_name: dict[str, Shard] = field(init=False, repr=False, compare=False)
    _prefixes: tuple[tuple[Any, str], ...] = field(init=False, repr=False, compare=False)
    _home: Callable[[str], Shard] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.shards:
            raise DiscoveryError("shards: at least one [[shards]] table is required")
        by_name = {shard.name: shard for shard in self.shards}
        if len(by_name) != len(self.shards):
            raise DiscoveryError("shards: shard names must be unique")
        # Hashers already fed with "name\0", copied per key: the per-key cost is one short
        # blake2b per shard.
        prefixes = tuple(
            (hashlib.blake2b(name.encode() + b"\0", digest_size=8), name)
            for name in sorted(by_name)
        )
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_prefixes", prefixes)
        home: Callable[[str], Shard] = lru_cache(maxsize=HOME_CACHE_SIZE)(self._place)
        object.__setattr__(self, "_home", home)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(shard.name for shard in self.shards)

    def shard(self, name: str) -> Shard:
        """The shard called ``name``; DiscoveryError naming it (and the listed ones) if none."""
        try:
            return self._by_name[name]
        except KeyError:
            listed = ", ".join(self.names)
            raise DiscoveryError(
                f"shard {name!r} is not in the discovery file (it lists {listed})"
            ) from None

    def home(self, key: str) -> Shard:
        """The shard that owns ``key`` (a user_id or a channel id): see the module docstring."""
        return self._home(key)

    def _place(self, key: str) -> Shard:
        prefixes = self._prefixes
        if len(prefixes) == 1:
            return self._by_name[prefixes[0][1]]
        if key.startswith("dm:"):
            a, sep, b = key[3:].partition(":")
            if sep and a and b and ":" not in b:
                homes = {self._home(a).name, self._home(b).name}
                prefixes = tuple(p for p in prefixes if p[1] in homes)
        return self._rendezvous(key, prefixes)

    def _rendezvous(self, key: str, prefixes: tuple[tuple[Any, str], ...]) -> Shard:
        data = key.encode("utf-8", "surrogatepass")
        best_score = b""
        best_name = ""
        for prefix, name in prefixes:  # sorted by name: on equal scores the greater name wins
            h = prefix.copy()
            h.update(data)
            score = h.digest()
            if score >= best_score:
                best_score, best_name = score, name
        return self._by_name[best_name]

    @property
    def loopback_only(self) -> bool:
        """Every peer address is on this machine (the development secret is allowed)."""
        return all(_is_loopback(shard.peer_host) for shard in self.shards)


# -- reading and checking


def load_discovery(path: str | Path, env: Mapping[str, str] | None = None) -> Discovery:
    """Read and check the discovery file at ``path``. The result is cached by path, file
    identity and secret, so :func:`for_config` hands back what start-up checked."""
    env = os.environ if env is None else env
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DiscoveryError(f"discovery file {path}: {exc.strerror}") from exc
    key = (os.path.abspath(path), st.st_ino, st.st_mtime_ns, st.st_size, env.get(SECRET_ENV))
    cached = _loaded.get(key)
    if cached is not None:
        return cached
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise DiscoveryError(f"discovery file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DiscoveryError(f"discovery file {path}: {exc}") from exc
    try:
        discovery = parse_discovery(data, env)
    except DiscoveryError as exc:
        raise DiscoveryError(f"discovery file {path}: {exc}") from None
    _loaded[key] = discovery
    return discovery


_loaded: dict[tuple[Any, ...], Discovery] = {}


def parse_discovery(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Discovery:
    """Check a TOML-shaped mapping and build the Discovery; DiscoveryError names the key.

    ``env`` (default ``os.environ``) is where :data:`SECRET_ENV` is looked up."""
    env = os.environ if env is None else env
    _only(data, {"shards", "broker", "cluster"}, "")
    raw_shards = data.get("shards")
    if raw_shards is None:
        raise DiscoveryError("shards: at least one [[shards]] table is required")
    if not isinstance(raw_shards, list) or not all(isinstance(s, dict) for s in raw_shards):
        raise DiscoveryError("shards: expected an array of tables ([[shards]])")
    if not raw_shards:
        raise DiscoveryError("shards: at least one [[shards]] table is required")

    shards: list[Shard] = []
    seen: dict[str, dict[Any, int]] = {"name": {}, "url": {}, "peer": {}}
    for i, raw in enumerate(raw_shards):
        where = f"shards[{i}]"
        _only(raw, {"name", "url", "peer"}, where)
        name = _string(raw, "name", where)
        if not _NAME.match(name):
            raise DiscoveryError(
                f"{where}.name: {name!r} must be 1-64 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        url = _check_url(_string(raw, "url", where).rstrip("/"), f"{where}.url")
        peer = _check_peer(_string(raw, "peer", where), f"{where}.peer")
        shard = Shard(name=name, url=url, peer=peer)
        identities = {"name": name, "url": _url_identity(url), "peer": _peer_identity(shard)}
        for key, identity in identities.items():
            if identity in seen[key]:
                first = seen[key][identity]
                raise DiscoveryError(
                    f"{where}.{key}: duplicate {raw[key]!r} (also shards[{first}].{key})"
                )
            seen[key][identity] = i
        shards.append(shard)
    # A peer port on the address a shard's url listens on could never be bound by both. (Two
    # urls on one address are fine: a reverse proxy may route by path to shards that run with
    # --listen.)
    listens = {_listen_identity(s): i for i, s in enumerate(shards)}
    for i, shard in enumerate(shards):
        j = listens.get(_peer_identity(shard))
        if j is not None:
            raise DiscoveryError(
                f"shards[{i}].peer: {shard.peer!r} is the address shards[{j}].url listens on"
            )

    broker_url = ""
    broker = data.get("broker")
    if broker is not None:
        if not isinstance(broker, dict):
            raise DiscoveryError("broker: expected a table ([broker])")
        _only(broker, {"url"}, "broker")
        broker_url = _check_broker(_string(broker, "url", "broker"), "broker.url")
    elif len(shards) > 1:
        raise DiscoveryError(
            f'broker: a [broker] table with url = "redis://..." is required when two or more '
            f"shards are listed (this file lists {len(shards)})"
        )

    cluster = data.get("cluster", {})
    if not isinstance(cluster, dict):
        raise DiscoveryError("cluster: expected a table ([cluster])")
    _only(cluster, {"secret"}, "cluster")
    secret = env.get(SECRET_ENV) or ""
    source = SECRET_ENV
    if not secret and "secret" in cluster:
        secret, source = _string(cluster, "secret", "cluster"), "cluster.secret"
    if not secret:
        if not all(_is_loopback(shard.peer_host) for shard in shards):
            raise DiscoveryError(
                "cluster.secret: required when a shard's peer address is not loopback "
                f"(set it in the discovery file or in the environment as {SECRET_ENV})"
            )
        secret = DEV_SECRET
    elif len(secret) < MIN_SECRET_CHARS:
        raise DiscoveryError(f"{source}: must be at least {MIN_SECRET_CHARS} characters")
    return Discovery(shards=tuple(shards), broker_url=broker_url, secret=secret)


def write_discovery(
    path: str | Path, shards: Sequence[Shard], broker_url: str = "", secret: str = ""
) -> Discovery:
    """Write a discovery file (checked first: a file it writes always loads) atomically, and
    return what it says. An empty ``secret`` leaves ``[cluster]`` out."""
    data: dict[str, Any] = {
        "shards": [{"name": s.name, "url": s.url, "peer": s.peer} for s in shards]
    }
    if broker_url:
        data["broker"] = {"url": broker_url}
    if secret:
        data["cluster"] = {"secret": secret}
    discovery = parse_discovery(data, env={})
    lines = ["# chatd discovery file: the shards of one cluster (see conf/cluster.example.toml)."]
    for s in shards:
        lines += ["", "[[shards]]"]
        lines += [f"{k} = {_toml_str(v)}" for k, v in (("name", s.name), ("url", s.url))]
        lines.append(f"peer = {_toml_str(s.peer)}")
    if broker_url:
        lines += ["", "[broker]", f"url = {_toml_str(broker_url)}"]
    if secret:
        lines += ["", "[cluster]", f"secret = {_toml_str(secret)}"]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return discovery


# -- helpers


def _only(table: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            name = f"{where}.{key}" if where else key
            raise DiscoveryError(f"{name}: unknown key (known: {', '.join(sorted(known))})")


def _string(table: Mapping[str, Any], key: str, where: str) -> str:
    if key not in table:
        raise DiscoveryError(f"{where}.{key}: required")
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise DiscoveryError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def _check_host(host: str, key: str, raw: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not _DNS_NAME.match(host) or host.replace(".", "").isdigit():
        raise DiscoveryError(f"{key}: bad host in {raw!r}")


def _check_url(url: str, key: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not url.lower().startswith(parts.scheme + "://"):
        raise DiscoveryError(f"{key}: must start with http:// or https://, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise DiscoveryError(f"{key}: must not carry a user or password, got {url!r}")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise DiscoveryError(f"{key}: must not have a query or fragment, got {url!r}")
    if not parts.hostname:
        raise DiscoveryError(f"{key}: no host in {url!r}")
    _check_host(parts.hostname, key, url)
    try:
        port = parts.port
    except ValueError:
        raise DiscoveryError(f"{key}: bad port in {url!r}") from None
    if port == 0:
        raise DiscoveryError(f"{key}: port 0 in {url!r} (other shards and clients must reach it)")
    if any(c.isspace() for c in url):
        raise DiscoveryError(f"{key}: must not contain spaces, got {url!r}")
    return url


def _url_identity(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme, (parts.hostname or "").rstrip("."), port, parts.path.rstrip("/"))


def _peer_identity(shard: Shard) -> tuple[str, int]:
    return (shard.peer_host.lower().rstrip("."), shard.peer_port)


def _listen_identity(shard: Shard) -> tuple[str, int]:
    host, _, port = shard.listen.rpartition(":")
    return (host.strip("[]").lower().rstrip("."), int(port))


def _split_hostport(value: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT -> (host without brackets, port); ValueError if malformed."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep or ":" not in host:
            raise ValueError(value)
    else:
        host, sep, port = value.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(value)
    if not host or not port.isdigit() or not 0 < int(port) <= 65535 or len(port) > 5:
        raise ValueError(value)
    return host, int(port)


def _check_peer(peer: str, key: str) -> str:
    try:
        host, _ = _split_hostport(peer)
    except ValueError:
        raise DiscoveryError(f"{key}: expected HOST:PORT (port 1-65535), got {peer!r}") from None
    _check_host(host, key, peer)
    return peer


def _check_broker(url: str, key: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not url.lower().startswith(parts.scheme + "://"):
        raise DiscoveryError(f"{key}: must start with redis:// or rediss://, got {_redact(url)!r}")
    if not parts.hostname:
        raise DiscoveryError(f"{key}: no host in {_redact(url)!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise DiscoveryError(f"{key}: bad port in {_redact(url)!r}") from None
    if not _DB.match(parts.path):
        raise DiscoveryError(f"{key}: the path must be a database number, e.g. /0")
    return url


def _redact(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _toml_str(value: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's, except that DEL must be escaped too
    and non-ASCII stays literal (TOML has no surrogate-pair escapes)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
