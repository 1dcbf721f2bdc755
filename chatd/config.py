"""Server configuration: a frozen, validated dataclass built once at start-up.

Sources, later ones winning: built-in defaults, a TOML file (``--config``), command-line flags.
Unknown keys and bad values raise :class:`ConfigError` naming the offending key, so a typo
stops start-up instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chatd.config_errors import ConfigError

if TYPE_CHECKING:
    from chatd.discovery import Discovery, Shard

__all__ = ["Config", "ConfigError", "load"]


def _positive(key: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{key}: must be a positive number, got {value!r}")


#: The smallest ``limits.outbound_queue_bytes``: a connection holds up to this many bytes
#: before it sends (chatd/net/outbound.py), so a smaller cap could not be kept.
OUTBOUND_MIN = 64 * 1024

#: The forwarding headers ``server.proxy_header`` may name (lower case, as compared).
PROXY_HEADERS = ("x-forwarded-for", "forwarded")


def _origin_ok(origin: str) -> bool:
    """``scheme://host[:port]`` and nothing else: what a browser sends as ``Origin``."""
    try:
        parts = urlsplit(origin)
        port = parts.port  # ValueError if out of range or not a number
    except ValueError:
        return False
    rebuilt = f"{parts.scheme}://{parts.netloc}"
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and origin == rebuilt == rebuilt.lower()
        and "@" not in parts.netloc
        and (port is not None or not parts.netloc.endswith(":"))
    )


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"
    data: str = "./var/chatd"
    shard: str = ""
    public_url: str = ""
    allowed_origins: tuple[str, ...] = ()
    drain_timeout: float = 10.0
    header_timeout: float = 10.0
    keepalive_timeout: float = 60.0
    hello_timeout: float = 10.0
    max_connections: int = 19000
    #: connections accepted per second at most, with bursts of ``accept_burst`` (a token
    #: bucket in the accept loop; beyond it connections wait in the listen backlog), so a
    #: reconnect storm cannot take every cycle from the connections already served
    accept_rate: float = 2000.0
    accept_burst: int = 1000
    #: peers (CIDRs or addresses) whose forwarding header names the client (chatd/net/proxies.py)
    trusted_proxies: tuple[str, ...] = ()
    proxy_header: str = "x-forwarded-for"

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def validate(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"server.listen: expected HOST:PORT, got {self.listen!r}")
        if not self.data.strip():
            raise ConfigError("server.data: must name a directory")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError("server.public_url: must start with http:// or https://")
        for key in ("drain_timeout", "header_timeout", "keepalive_timeout", "hello_timeout"):
            _positive(f"server.{key}", getattr(self, key))
        _positive("server.max_connections", self.max_connections)
        _positive("server.accept_rate", self.accept_rate)
        _positive("server.accept_burst", self.accept_burst)
        for origin in self.allowed_origins:
            if not _origin_ok(origin):
                raise ConfigError(
                    f"server.allowed_origins: {origin!r} is not an origin (scheme://host[:port] "
                    "in lower case, http or https, no path, no trailing slash)"
                )
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ConfigError(f"server.trusted_proxies: {cidr!r}: {exc}") from None
        if self.proxy_header.lower() not in PROXY_HEADERS:
            raise ConfigError("server.proxy_header: expected X-Forwarded-For or Forwarded")


@dataclass(frozen=True)
class LimitsConfig:
    send_rate: float = 20.0
    send_burst: int = 100
    login_rate: float = 0.05
    login_burst: int = 5
    signup_rate: float = 0.05
    signup_burst: int = 5
    max_sessions_per_user: int = 10
    max_group_members: int = 100
    typing_rate: float = 1.0
    typing_burst: int = 5
    read_rate: float = 20.0
    read_burst: int = 100
    history_rate: float = 10.0
    history_burst: int = 50
    max_body_chars: int = 100_000
    max_frame_bytes: int = 1 << 20
    max_request_body: int = 1 << 20
    outbound_queue_bytes: int = 1 << 20
    #: seconds a WebSocket may have unsent bytes and a socket that takes none before it is
    #: closed 1008 (chatd/net/outbound.py): a reader that stopped, below the byte cap
    write_stall_timeout: float = 10.0
    max_connections_per_ip: int = 1000
    api_rate: float = 50.0
    api_burst: int = 200

    def validate(self) -> None:
        for f in fields(self):
            _positive(f"limits.{f.name}", getattr(self, f.name))
        if self.outbound_queue_bytes < OUTBOUND_MIN:
            raise ConfigError(
                f"limits.outbound_queue_bytes: must be at least {OUTBOUND_MIN} (64 KiB), "
                f"got {self.outbound_queue_bytes!r}"
            )


@dataclass(frozen=True)
class StorageConfig:
    map_size: int = 64 << 20
    max_map_size: int = 1 << 40
    sync: bool = True
    #: Allow settings that let a crash lose acknowledged writes (``sync = false``: LMDB's
    #: sync and metasync off). Without it such a config is refused at start-up.
    unsafe_fast_commit: bool = False
    #: LMDB's writemap: dirty pages written in the map, not copied into the heap (see
    #: docs/operations.md "Dirty pages live in the map"); false on copy-on-write file systems.
    writemap: bool = True
    max_batch: int = 1000
    max_queue_bytes: int = 64 << 20
    sweep_interval: float = 300.0
    ref_retention_hours: float = 24.0
    #: Days a message is kept (with its inbox entries); 0 keeps history forever. Purged by
    #: the sweep in bounded chunks; see docs/protocol.md "Retention".
    history_retention_days: float = 0.0

    def validate(self) -> None:
        for key in (
            "map_size",
            "max_map_size",
            "max_batch",
            "max_queue_bytes",
            "sweep_interval",
            "ref_retention_hours",
        ):
            _positive(f"storage.{key}", getattr(self, key))
        if self.history_retention_days < 0:
            raise ConfigError("storage.history_retention_days: must be >= 0 (0: keep forever)")
        if (
            self.history_retention_days
            and self.history_retention_days * 24 < self.ref_retention_hours
        ):
            raise ConfigError(
                "storage.history_retention_days: must cover storage.ref_retention_hours "
                "(a ref's ack names its message)"
            )
        if self.max_map_size < self.map_size:
            raise ConfigError("storage.max_map_size: must be >= storage.map_size")
        if not self.sync and not self.unsafe_fast_commit:
            raise ConfigError(
                "storage.sync: false turns off LMDB's sync and metasync, so a crash or power "
                "loss can lose acknowledged messages; set storage.unsafe_fast_commit = true "
                "to run that way anyway (tests and benchmarks only)"
            )


@dataclass(frozen=True)
class SecurityConfig:
    token_ttl_days: float = 30.0
    # OWASP's argon2id baseline: m=19 MiB, t=2, p=1.
    argon2_memory_kib: int = 19456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    hash_threads: int = 2
    max_pending_hashes: int = 256

    def validate(self) -> None:
        for f in fields(self):
            _positive(f"security.{f.name}", getattr(self, f.name))
        # OWASP's equivalent settings trade memory for passes (m=7 MiB t=5 ... m=46 MiB t=1).
        if self.argon2_memory_kib * self.argon2_time_cost < 7168 * 5:
            raise ConfigError(
                "security.argon2_memory_kib: argon2_memory_kib * argon2_time_cost must be at "
                "least 35840 (OWASP's minimum for argon2id)"
            )


@dataclass(frozen=True)
class PresenceConfig:
    timeout: float = 30.0
    grace: float = 5.0
    sweep_interval: float = 1.0
    tcp_keepidle: int = 30
    tcp_keepintvl: int = 10
    tcp_keepcnt: int = 3
    tcp_user_timeout: float = 60.0

    def validate(self) -> None:
        for f in fields(self):
            _positive(f"presence.{f.name}", getattr(self, f.name))
        if self.sweep_interval > self.timeout:
            raise ConfigError("presence.sweep_interval: must not exceed presence.timeout")


@dataclass(frozen=True)
class PushConfig:
    """Push notifications for offline recipients (``chatd/push/``, docs/api.md "Push")."""

    #: Let push subscriptions target loopback/private addresses (tests, LAN relays), and
    #: plain ``http``. A key the client contract fixes.
    allow_private_networks: bool = False
    #: A notification not delivered this long after its message is dropped (counted expired).
    expiry_hours: float = 24.0
    #: At most one notification per subscription and channel per this many seconds; the
    #: messages of a window go out as one notification carrying their ``count``.
    collapse_window: float = 10.0
    #: Notifications in flight at once (HTTP requests to webhooks and push services).
    concurrency: int = 32
    #: The first retry waits about this many seconds; each further one twice as long (with
    #: jitter), up to ``retry_max``.
    retry_base: float = 1.0
    retry_max: float = 600.0
    #: Seconds to connect (TCP and TLS), and to receive the whole response.
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    #: Subscriptions per user (400 bad_request beyond).
    max_subscriptions: int = 10
    #: The VAPID ``sub`` claim push services may contact (``mailto:`` or ``https:``).
    vapid_subject: str = "mailto:chatd@localhost"

    def validate(self) -> None:
        for key in (
            "expiry_hours",
            "collapse_window",
            "concurrency",
            "retry_base",
            "retry_max",
            "connect_timeout",
            "read_timeout",
            "max_subscriptions",
        ):
            _positive(f"push.{key}", getattr(self, key))
        if self.retry_max < self.retry_base:
            raise ConfigError("push.retry_max: must be >= push.retry_base")
        if not self.vapid_subject.startswith(("mailto:", "https://")):
            raise ConfigError("push.vapid_subject: must start with mailto: or https://")


@dataclass(frozen=True)
class ClusterConfig:
    #: The discovery file listing the cluster's shards (chatd/discovery.py); "" = one
    #: process, everything local, no broker. With it, ``server.shard`` names this process.
    discovery: str = ""

    def validate(self) -> None:
        pass  # the file itself is checked by Config.validate, which also sees server.shard


@dataclass(frozen=True)
class TestingConfig:
    """Test-only switches, all off by default; never set in production (docs/conformance.md)."""

    #: Serve ``/v1/testing/echo`` (``chatd/net/echo.py``): a WebSocket that echoes each text
    #: and binary message back, over the same connection layer as ``/v1/ws``, with no hello
    #: and no authentication. For the Autobahn|Testsuite conformance run (scripts/autobahn).
    websocket_echo: bool = False
    #: Frames one message may come in on the echo endpoint (``/v1/ws`` keeps 1,024): the
    #: conformance run sends 4 MiB in 64-byte fragments.
    echo_max_fragments: int = 1024

    def validate(self) -> None:
        _positive("testing.echo_max_fragments", self.echo_max_fragments)


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class LogConfig:
    #: "text" (key=value, one line per event) or "json" (one object per line)
    format: str = "text"
    level: str = "INFO"
    #: a file to append to ("" = stderr, which systemd's journal collects); SIGHUP reopens it
    file: str = ""

    def validate(self) -> None:
        if self.format not in LOG_FORMATS:
            raise ConfigError(f"log.format: expected one of {', '.join(LOG_FORMATS)}")
        if self.level.upper() not in LOG_LEVELS:
            raise ConfigError(f"log.level: expected one of {', '.join(LOG_LEVELS)}")


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    push: PushConfig = field(default_factory=PushConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    log: LogConfig = field(default_factory=LogConfig)
    testing: TestingConfig = field(default_factory=TestingConfig)

    def validate(self) -> Config:
        for f in fields(self):
            getattr(self, f.name).validate()
        if self.cluster.discovery:
            self.cluster_shard()
        return self

    def discovery(self) -> Discovery | None:
        """The cluster this process belongs to, or None for the single-process default (no
        discovery file: everything is local and there is no broker)."""
        from chatd.discovery import load_discovery

        return load_discovery(self.cluster.discovery) if self.cluster.discovery else None

    def cluster_shard(self) -> Shard:
        """This process's entry in the discovery file (chatd/discovery.py);
        ConfigError naming ``server.shard`` (or the file's key) when there is none. Only for a
        config with ``cluster.discovery`` set."""
        from chatd.discovery import DiscoveryError, load_discovery

        discovery = load_discovery(self.cluster.discovery)
        if not self.server.shard:
            raise ConfigError(
                "server.shard: required with a discovery file "
                "(chatd serve --discovery FILE --shard NAME)"
            )
        try:
            return discovery.shard(self.server.shard)
        except DiscoveryError as exc:
            raise ConfigError(f"server.shard: {exc}") from None

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed, validated."""
        new = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: new}).validate()


def _coerce(key: str, want: Any, value: Any) -> Any:
    """Check a TOML value against the dataclass field's type; ints widen to floats."""
    if want in ("float", float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if want in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if want in ("bool", bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if want in ("str", str):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if str(want).startswith("tuple[str"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise ConfigError(f"{key}: unsupported type")  # pragma: no cover


def from_mapping(data: dict[str, Any], base: Config | None = None) -> Config:
    """Build a validated Config from a TOML-shaped mapping, refusing unknown keys."""
    config = base or Config()
    sections = {f.name: f for f in fields(Config)}
    for section, values in data.items():
        if section not in sections:
            raise ConfigError(f"{section}: unknown config section")
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a table")
        current = getattr(config, section)
        known = {f.name: f.type for f in fields(current)}
        changes = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{section}.{key}: unknown config key")
            changes[key] = _coerce(f"{section}.{key}", known[key], value)
        config = dataclasses.replace(config, **{section: dataclasses.replace(current, **changes)})
    return config.validate()


def load(
    path: str | Path | None = None, *, discovery: str | Path | None = None, **overrides: Any
) -> Config:
    """Read the TOML file at ``path`` (if any) and apply the CLI's overrides: ``discovery``
    (``cluster.discovery``) and the ``server`` keys (listen, data, shard).

    With a discovery file, the shard's entry supplies ``server.listen`` (its url's HOST:PORT;
    only a ``listen`` override wins, since one config file is usually shared by every shard)
    and ``server.public_url`` (its url, unless the config sets one)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
    server = {k: v for k, v in overrides.items() if v is not None}
    if server:
        data.setdefault("server", {}).update(server)
    if discovery is not None:
        cluster = data.setdefault("cluster", {})
        if isinstance(cluster, dict):
            cluster["discovery"] = str(discovery)
    config = from_mapping(data)
    if not config.cluster.discovery:
        return config
    shard = config.cluster_shard()
    changes = {"public_url": config.server.public_url or shard.url}
    if server.get("listen") is None:
        changes["listen"] = shard.listen
    return config.replace("server", **changes)
