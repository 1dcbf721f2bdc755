"""Accounts: signup, password login, bearer tokens, profiles, friendships.

Passwords are hashed with argon2id in worker threads (at most ``security.hash_threads`` at once,
at most ``security.max_pending_hashes`` queued, beyond which login answers 503 with Retry-After)
so a login burst never blocks the event loop; those threads run at the lowest CPU priority, so
on a busy machine chat is served first. A hash made with other parameters than today's is
replaced at the next successful login (``check_needs_rehash``). A login for an unknown user
verifies against a dummy hash, so it costs the same time as a wrong password.

Tokens are 256 random bits, sent to the client once and stored only as their SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import argon2
import trio

from chatd.config import SecurityConfig
from chatd.domain import friends_tx, validate
from chatd.domain.errors import BadRequest, Conflict, NotFound, Unauthorized, Unavailable
from chatd.domain.ports import Relay
from storage import StorageUnavailable, Store
from storage import errors as storage_errors

#: Seconds a login refused for a full password-check queue is told to wait (Retry-After).
HASH_QUEUE_RETRY_AFTER = 1.0
#: The nice value of a thread hashing passwords: when the CPU is short, the event loop (chat)
#: comes first and logins wait (their queue is bounded, see ``security.max_pending_hashes``).
HASH_NICE = 19
_thread = threading.local()


def _niced(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in this worker thread at :data:`HASH_NICE` (set once per thread; Linux keeps a
    nice value per thread, and an unprivileged thread cannot raise it again, so only worker
    threads ever run this: trio's, which in the server run nothing but password hashes)."""
    if not getattr(_thread, "niced", False):
        _thread.niced = True
        if sys.platform == "linux":
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)
            except OSError:
                pass  # not allowed here: run at the same priority as the event loop
    return fn(*args)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Accounts:
    def __init__(
        self,
        store: Store,
        config: SecurityConfig,
        *,
        relay: Relay | None = None,
        exists: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        self.relay = relay  # a cluster: friendship rows of users homed elsewhere
        self.exists = exists  # a cluster: whether an account exists on any shard
        self.ttl_ms = int(config.token_ttl_days * 86_400_000)
        self.hasher = argon2.PasswordHasher(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_kib,
            parallelism=config.argon2_parallelism,
            type=argon2.Type.ID,
        )
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        self._limiter = trio.CapacityLimiter(config.hash_threads)
        self._max_pending = config.max_pending_hashes
        self._pending = 0

    async def _off_loop(self, fn: Any, *args: Any) -> Any:
        if self._pending >= self._max_pending:
            raise Unavailable(
                "too many password checks in progress, retry shortly",
                retry_after=HASH_QUEUE_RETRY_AFTER,
            )
        self._pending += 1
        try:
            return await trio.to_thread.run_sync(_niced, fn, *args, limiter=self._limiter)
        finally:
            self._pending -= 1

    async def signup(self, user_id: str, password: str, display_name: str | None) -> None:
        if self.store.account(user_id) is not None:
            raise Conflict(f"user_id {user_id!r} is taken")
        pw_hash = await self._off_loop(self.hasher.hash, password)
        record = {
            "display_name": display_name or user_id,
            "created_at": now_ms(),
            "pw": pw_hash,
            "last_active": 0,
        }
        try:
            await self.store.create_account(user_id, record)
        except storage_errors.Conflict:
            raise Conflict(f"user_id {user_id!r} is taken") from None

    async def login(self, user_id: str, password: str) -> tuple[str, int]:
        """Check the password; return a new token and its expiry (ms since the epoch)."""
        account = self.store.account(user_id)
        pw_hash = account["pw"] if account else self._dummy_hash
        ok = await self._off_loop(self._verify, pw_hash, password)
        if not ok or account is None:
            raise Unauthorized("bad user_id or password")
        if self.hasher.check_needs_rehash(pw_hash):
            await self._rehash(user_id, password)
        # ``<user_id>.<256 random bits>``: any shard of a cluster routes it to the user's home
        # shard, where it is checked (docs/api.md "Tokens").
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        token = f"{user_id}.{secret}"
        expires_at = now_ms() + self.ttl_ms
        await self.store.put_token(token_digest(token), user_id, expires_at)
        return token, expires_at

    async def _rehash(self, user_id: str, password: str) -> None:
        """Store the password hashed with today's parameters: a hash made with older (weaker
        or different) ones is upgraded at the first login that proves the password. A login
        flood cannot turn this into a second hash per attempt: only correct passwords get
        here, and a failure to upgrade never fails the login."""
        try:
            new_hash = await self._off_loop(self.hasher.hash, password)
            await self.store.update_account(user_id, {"pw": new_hash})
        except (Unavailable, StorageUnavailable, KeyError):
            pass  # the old hash still works; the next login tries again

    def _verify(self, pw_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(pw_hash, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False

    def authenticate(self, token: str) -> str:
        """The user a bearer token belongs to; Unauthorized if unknown, revoked or expired."""
        return self.authenticate_until(token)[0]

    def authenticate_until(self, token: str) -> tuple[str, int]:
        """:meth:`authenticate`, with the token's expiry (ms since the epoch)."""
        record = self.store.token(token_digest(token)) if token else None
        if record is None or record["exp"] <= now_ms():
            raise Unauthorized("missing, bad, expired or revoked token")
        return record["user"], record["exp"]

    async def logout(self, token: str) -> None:
        await self.store.delete_token(token_digest(token))

    def profile(self, user_id: str) -> dict[str, Any]:
        account = self.store.account(user_id)
        if account is None:
            raise NotFound(f"no user {user_id!r}")
        return {
            "user_id": user_id,
            "display_name": account["display_name"],
            "created_at": account["created_at"],
        }

    async def update_profile(self, user_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        if set(changes) - {"display_name"}:
            raise BadRequest("only display_name can be changed")
        name = validate.display_name(changes.get("display_name"))
        await self.store.update_account(user_id, {"display_name": name})
        return self.profile(user_id)

    def require_user(self, user_id: str) -> None:
        if self.store.account(user_id) is None:
            raise NotFound(f"no user {user_id!r}")

    async def add_friend(self, user_id: str, other: str) -> str:
        if other == user_id:
            raise BadRequest("you cannot befriend yourself")
        if self.exists is None:
            self.require_user(other)
        elif not await self.exists(other):
            raise NotFound(f"no user {other!r}")
        relay = self.relay
        return await self.store.write(
            lambda tx: friends_tx.request_friend(tx, user_id, other, relay)
        )

    async def remove_friend(self, user_id: str, other: str) -> None:
        relay = self.relay
        await self.store.write(lambda tx: friends_tx.remove_friend(tx, user_id, other, relay))

    def friends(self, user_id: str) -> list[tuple[str, str]]:
        """(other user, state) for each friendship of ``user_id``."""
        return self.store.friends(user_id)
