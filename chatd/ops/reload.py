"""SIGHUP: reopen the log and apply the part of a changed config that is safe to change live.

The config is read again (same file, same flags). If it is invalid, the error is logged and
nothing changes. Otherwise these keys take effect at once:

- ``[log]`` ``format``, ``level``, ``file``: the handler is rebuilt, so ``log.file`` is
  reopened (rotate it, then send SIGHUP);
- ``[limits]`` ``*_rate`` and ``*_burst`` of send, read, typing, history, api, login and
  signup: the token buckets keep their state and refill at the new rate up to the new burst.

Every other changed key is listed in a warning as needing a restart (listen address, data
directory, storage, security, presence, connection caps, cluster).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from chatd.config import Config, ConfigError
from chatd.domain.ratelimit import RateLimiter
from chatd.ops import logs

log = logging.getLogger("chatd")
LIVE_LIMITS = ("send", "read", "typing", "history", "api", "login", "signup")


def changed(old: Config, new: Config) -> list[str]:
    """``section.key`` of every key whose value differs."""
    out = []
    for section in dataclasses.fields(Config):
        a, b = getattr(old, section.name), getattr(new, section.name)
        for f in dataclasses.fields(a):
            if getattr(a, f.name) != getattr(b, f.name):
                out.append(f"{section.name}.{f.name}")
    return out


class Reloader:
    def __init__(
        self, config: Config, load: Callable[[], Config], limiters: dict[str, RateLimiter]
    ) -> None:
        self.config = config  # what runs now (live keys included)
        self.load = load  # the config as the command line says, read again
        self.limiters = limiters  # by name: send, read, typing, history, api, login, signup

    def reload(self) -> list[str]:
        """Apply what is safe; returns the keys that need a restart."""
        try:
            new = self.load()
        except ConfigError as exc:
            log.error("SIGHUP: config not reloaded: %s", exc)
            return []
        keys = changed(self.config, new)
        logs.setup(new.log)
        live = {k for k in keys if k.startswith("log.")}
        for name, limiter in self.limiters.items():
            for part in ("rate", "burst"):
                key = f"limits.{name}_{part}"
                if key in keys:
                    setattr(limiter, part, float(getattr(new.limits, f"{name}_{part}")))
                    live.add(key)
        applied: dict[str, Any] = {}
        for key in live:
            section, name = key.split(".")
            applied.setdefault(section, {})[name] = getattr(getattr(new, section), name)
        config = self.config
        for section, values in applied.items():
            config = dataclasses.replace(
                config, **{section: dataclasses.replace(getattr(config, section), **values)}
            )
        self.config = config
        rest = sorted(set(keys) - live)
        log.info("SIGHUP: log reopened; applied %s", ", ".join(sorted(live)) or "no changes")
        if rest:
            log.warning("SIGHUP: changed keys need a restart: %s", ", ".join(rest))
        return rest
