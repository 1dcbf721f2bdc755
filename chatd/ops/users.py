"""Operator actions on accounts: add, disable, enable, reset a password.

They run inside the server (through its admin socket, ``chatd/ops/admin.py``) or, when no
server runs, in the admin command's own process holding the data directory's lock: either
way through the one writer, the group committer. Disabling or resetting a password ends the
user's access at once: the account record is changed first (a disabled account's password
hash is kept behind a ``!`` that no password verifies against, so login fails), then every
token of the user is deleted (the tokens sub-database is keyed by digest, so this walks it in
chunks of 1,000 keys, one write op each, like the retention sweep), then every online device
of the user is signed out with ``unauthorized`` (close 4001).

:class:`GuardedAccounts` closes the one race left: a login whose password check was already
running when the account was disabled re-reads the account after storing its token, and
withdraws the token if the account is disabled by then.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import trio

from chatd.domain import validate
from chatd.domain.accounts import Accounts, token_digest
from chatd.domain.errors import BadRequest, NotFound, Unauthorized
from chatd.domain.ports import Router
from chatd.domain.sessions import Sessions
from storage import Store, WriteTx
from storage.codec import unpack

LOCKED = "!"  # prefix of a disabled account's password hash: verifies against nothing
CHUNK = 1000


class GuardedAccounts(Accounts):
    """Accounts whose login re-checks, after storing the token, that the account was not
    disabled meanwhile (see the module docstring)."""

    async def login(self, user_id: str, password: str) -> tuple[str, int]:
        token, expires_at = await super().login(user_id, password)
        account = self.store.account(user_id)
        if account is None or account.get("disabled"):
            await self.store.delete_token(token_digest(token))
            raise Unauthorized("bad user_id or password")
        return token, expires_at


def _set_disabled(tx: WriteTx, user_id: str, disabled: bool) -> bool:
    """Mark the account (un)disabled; whether it changed. KeyError if there is none."""
    account = tx.account_get(user_id)
    if account is None:
        raise KeyError(user_id)
    if bool(account.get("disabled")) == disabled:
        return False
    pw = account["pw"]
    pw = LOCKED + pw if disabled else pw.removeprefix(LOCKED)
    tx.account_update(user_id, {"disabled": disabled, "pw": pw})
    return True


def _set_password(tx: WriteTx, user_id: str, pw_hash: str) -> None:
    account = tx.account_get(user_id)
    if account is None:
        raise KeyError(user_id)
    tx.account_update(user_id, {"pw": LOCKED + pw_hash if account.get("disabled") else pw_hash})


def _purge_tokens(tx: WriteTx, user_id: str, start: bytes, limit: int) -> tuple[bytes | None, int]:
    """Delete ``user_id``'s tokens among at most ``limit`` keys from ``start``; returns (the
    key to resume from or None at the end, tokens deleted)."""
    cursor = tx.txn.write_cursor("tokens")
    ok = cursor.set_range(start) if start else cursor.first()
    seen = deleted = 0
    while ok:
        if seen >= limit:
            return bytes(cursor.key()), deleted
        seen += 1
        if unpack(cursor.value()).get("user") == user_id:
            ok = cursor.delete() and bool(cursor.key())
            deleted += 1
        else:
            ok = cursor.next()
    return None, deleted


class UserAdmin:
    """The actions, on a running store (the server's, or the admin command's own)."""

    def __init__(
        self,
        store: Store,
        accounts: Accounts,
        sessions: Sessions | None = None,
        router: Router | None = None,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.sessions = sessions
        self.router = router

    def _here(self, user_id: str) -> str:
        user_id = validate.user_id(user_id)
        if self.router is not None:
            home = self.router.home(user_id)
            if not home.local:
                raise BadRequest(
                    f"{user_id} lives on shard {home.shard}: use that shard's admin socket"
                )
        return user_id

    async def add(
        self, user_id: str, password: str, display_name: str | None = None
    ) -> dict[str, Any]:
        user_id = self._here(user_id)
        name = validate.display_name(display_name) if display_name else None
        await self.accounts.signup(user_id, validate.password(password), name)
        return {"user_id": user_id}

    async def disable(self, user_id: str) -> dict[str, Any]:
        user_id = self._here(user_id)
        changed = await self._write(lambda tx: _set_disabled(tx, user_id, True), user_id)
        revoked = await self._revoke(user_id, "account disabled")
        return {"user_id": user_id, "disabled": True, "changed": changed, **revoked}

    async def enable(self, user_id: str) -> dict[str, Any]:
        user_id = self._here(user_id)
        changed = await self._write(lambda tx: _set_disabled(tx, user_id, False), user_id)
        return {"user_id": user_id, "disabled": False, "changed": changed}

    async def reset_password(self, user_id: str, password: str) -> dict[str, Any]:
        user_id = self._here(user_id)
        password = validate.password(password)
        if self.store.account(user_id) is None:
            raise NotFound(f"no user {user_id!r}")
        pw_hash = await trio.to_thread.run_sync(self.accounts.hasher.hash, password)
        await self._write(lambda tx: _set_password(tx, user_id, pw_hash), user_id)
        revoked = await self._revoke(user_id, "password reset")
        return {"user_id": user_id, **revoked}

    async def _write(self, fn: Any, user_id: str) -> Any:
        try:
            return await self.store.write(fn)
        except KeyError:
            raise NotFound(f"no user {user_id!r}") from None

    async def _revoke(self, user_id: str, why: str) -> dict[str, int]:
        """Delete every token of ``user_id`` and sign out its online devices."""
        start: bytes | None = b""
        tokens = 0
        while start is not None:
            start, deleted = await self.store.write(
                partial(_purge_tokens, user_id=user_id, start=start, limit=CHUNK)
            )
            tokens += deleted
        devices = 0
        if self.sessions is not None:
            for device in list(self.sessions.devices(user_id)):
                device.end("unauthorized", why)
                devices += 1
        return {"tokens_revoked": tokens, "sessions_ended": devices}
