"""Bench accounts over the real HTTP API: sign up and log in, a few requests at a time.

Signup and password login are argon2id-bound on the server (~20 ms of CPU each), so the
scenarios create as few users as they can and reuse tokens; see bench/README.md.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

PASSWORD = "bench-password-1"


class ApiError(RuntimeError):
    pass


class Api:
    """A keep-alive JSON client for one thread (``http.client``; no dependencies)."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
                continue
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError:
                payload = {"raw": raw[:200].decode(errors="replace")}
            return resp.status, payload
        raise AssertionError("unreachable")

    def call_retrying(
        self, method: str, path: str, body: dict[str, Any], tries: int = 20
    ) -> tuple[int, dict[str, Any]]:
        """Retry 429 and 503 after the server's ``retry_after`` (bounded by ``tries``)."""
        for _ in range(tries):
            status, payload = self.call(method, path, body)
            if status not in (429, 503):
                return status, payload
            time.sleep(min(float(payload.get("retry_after") or 100) / 1000.0, 2.0))
        return status, payload

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def signup_and_login(base_url: str, user_ids: list[str], *, workers: int = 8) -> dict[str, str]:
    """Create each user (an existing one is fine) and log it in; return user_id -> token."""
    local = threading.local()
    apis: list[Api] = []

    def api() -> Api:
        if not hasattr(local, "api"):
            local.api = Api(base_url)
            apis.append(local.api)
        return local.api  # type: ignore[no-any-return]

    def one(user: str) -> tuple[str, str]:
        status, body = api().call_retrying(
            "POST", "/v1/signup", {"user_id": user, "password": PASSWORD}
        )
        if status not in (201, 409):
            raise ApiError(f"signup {user}: {status} {body}")
        status, body = api().call_retrying(
            "POST", "/v1/login", {"user_id": user, "password": PASSWORD}
        )
        if status != 200:
            raise ApiError(f"login {user}: {status} {body}")
        return user, body["token"]

    try:
        with ThreadPoolExecutor(workers) as pool:
            return dict(pool.map(one, user_ids))
    finally:
        for a in apis:
            a.close()


def timed_logins(base_url: str, user_ids: list[str], *, workers: int) -> dict[str, Any]:
    """Password logins as fast as the server takes them: count, seconds, logins/s, failures."""
    local = threading.local()
    failures: list[str] = []
    apis: list[Api] = []

    def one(user: str) -> None:
        if not hasattr(local, "api"):
            local.api = Api(base_url)
            apis.append(local.api)
        status, body = local.api.call("POST", "/v1/login", {"user_id": user, "password": PASSWORD})
        if status != 200:
            failures.append(f"{status} {body.get('error')}")

    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, user_ids))
    finally:
        secs = time.monotonic() - t0
        for a in apis:
            a.close()
    ok = len(user_ids) - len(failures)
    return {"logins": ok, "failed": len(failures), "secs": secs, "per_s": ok / secs}
