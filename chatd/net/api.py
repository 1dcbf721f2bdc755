"""HTTP API routes (see docs/api.md): request parsing in, domain calls, JSON out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from chatd.domain import validate
from chatd.domain.accounts import Accounts, token_digest
from chatd.domain.errors import BadRequest, RateLimited, Unavailable
from chatd.domain.groups import Groups
from chatd.domain.messaging import Messenger
from chatd.domain.presence import Presence
from chatd.domain.ratelimit import RateLimiter
from chatd.domain.sessions import Sessions
from chatd.net.lifecycle import Lifecycle
from chatd.net.metrics import CONTENT_TYPE, Collector, render
from chatd.net.proxies import limit_key
from chatd.net.routing import Request, Response, Router, Text, run_handler
from chatd.net.static import StaticSite, load


class PushRoutes(Protocol):
    """Push subscriptions (``chatd/push/``): the calls behind ``/v1/push/...``."""

    async def subscribe(self, user_id: str, data: Any) -> dict[str, Any]: ...

    async def unsubscribe(self, user_id: str, sub_id: str) -> None: ...

    def vapid_public_key(self) -> str: ...


class Api:
    def __init__(
        self,
        *,
        accounts: Accounts,
        sessions: Sessions,
        messenger: Messenger,
        groups: Groups,
        presence: Presence,
        lifecycle: Lifecycle,
        limiters: dict[str, RateLimiter],
        ws_url: str,
        metrics: Collector,
        health: Callable[[], dict[str, Any]] | None = None,
        push: PushRoutes | None = None,
    ) -> None:
        self.accounts = accounts
        self.sessions = sessions
        self.messenger = messenger
        self.groups = groups
        self.presence = presence
        self.lifecycle = lifecycle
        self.limiters = limiters  # "api" per user; "login" and "signup" per client address
        self.ws_url = ws_url
        self.metrics = metrics
        self.health = health  # more of ``/healthz`` (a shard's cluster state)
        self.push = push
        r = self.router = Router()
        r.add("GET", "/healthz", self.healthz, auth=False)
        r.add("GET", "/metrics", self.metrics_text, auth=False)
        r.add("POST", "/v1/signup", self.signup, auth=False)
        r.add("POST", "/v1/login", self.login, auth=False)
        r.add("POST", "/v1/logout", self.logout)
        r.add("GET", "/v1/me", self.me)
        r.add("PATCH", "/v1/me", self.patch_me)
        r.add("GET", "/v1/users/{user_id}", self.user)
        r.add("GET", "/v1/friends", self.friends)
        r.add("PUT", "/v1/friends/{user_id}", self.add_friend)
        r.add("DELETE", "/v1/friends/{user_id}", self.remove_friend)
        r.add("GET", "/v1/channels/{channel_id}/messages", self.channel_messages)
        r.add("GET", "/v1/channels", self.channels)
        r.add("GET", "/v1/presence", self.presence_query)
        r.add("POST", "/v1/groups", self.create_group)
        r.add("GET", "/v1/groups/{channel_id}", self.group)
        r.add("PUT", "/v1/groups/{channel_id}/members/{user_id}", self.add_member)
        r.add("DELETE", "/v1/groups/{channel_id}/members/{user_id}", self.remove_member)
        if push is not None:
            r.add("POST", "/v1/push/subscriptions", self.push_subscribe)
            r.add("DELETE", "/v1/push/subscriptions/{sub_id}", self.push_unsubscribe)
            r.add("GET", "/v1/push/vapid", self.push_vapid)
        StaticSite(load(), ws_url).add_routes(r)  # the web client at ``/``, read once here

    async def dispatch(self, request: Request) -> Response:
        async def routed(req: Request) -> Response:
            handler, auth, params = self.router.match(req.method, req.path)
            if auth:
                if not req.user_id:  # else asserted by the shard that authenticated it
                    req.token = req.bearer()
                    req.user_id = self.accounts.authenticate(req.token)
                self._limit("api", req.user_id)
            return await handler(req, **params)

        return await run_handler(routed, request, {})

    def _limit(self, limiter_name: str, key: str) -> None:
        wait = self.limiters[limiter_name].take(key)
        if wait:
            raise RateLimited("too many requests, slow down", retry_after=wait)

    async def metrics_text(self, req: Request) -> Response:
        return Response(200, Text(render(self.metrics()), CONTENT_TYPE))

    async def healthz(self, req: Request) -> Response:
        if self.lifecycle.draining:
            raise Unavailable("draining")
        extra = self.health() if self.health is not None else {}
        return Response(200, {"status": "ok", **extra})

    async def signup(self, req: Request) -> Response:
        self._limit("signup", limit_key(req.client))
        data = req.json()
        user_id = validate.user_id(data.get("user_id"))
        password = validate.password(data.get("password"))
        name = data.get("display_name")
        if name is not None:
            name = validate.display_name(name)
        await self.accounts.signup(user_id, password, name)
        return Response(201, {"user_id": user_id})

    async def login(self, req: Request) -> Response:
        self._limit("login", limit_key(req.client))
        data = req.json()
        user_id = validate.user_id(data.get("user_id"))
        password = data.get("password")
        if not isinstance(password, str) or len(password) > validate.PASSWORD_MAX:
            raise BadRequest("password must be a string of at most 1024 characters")
        token, expires_at = await self.accounts.login(user_id, password)
        body = {"token": token, "user_id": user_id, "ws_url": self.ws_url}
        return Response(200, {**body, "expires_at": expires_at})

    async def logout(self, req: Request) -> Response:
        await self.accounts.logout(req.token)
        self.sessions.revoke(req.user_id, token_digest(req.token))
        return Response(204)

    async def me(self, req: Request) -> Response:
        return Response(200, self.accounts.profile(req.user_id))

    async def patch_me(self, req: Request) -> Response:
        return Response(200, await self.accounts.update_profile(req.user_id, req.json()))

    async def user(self, req: Request, user_id: str) -> Response:
        return Response(200, self.accounts.profile(validate.user_id(user_id)))

    async def friends(self, req: Request) -> Response:
        rows = self.accounts.friends(req.user_id)
        return Response(200, {"friends": [{"user_id": u, "state": s} for u, s in rows]})

    async def add_friend(self, req: Request, user_id: str) -> Response:
        state = await self.accounts.add_friend(req.user_id, validate.user_id(user_id))
        return Response(200, {"user_id": user_id, "state": state})

    async def remove_friend(self, req: Request, user_id: str) -> Response:
        await self.accounts.remove_friend(req.user_id, validate.user_id(user_id))
        return Response(204)

    async def channel_messages(self, req: Request, channel_id: str) -> Response:
        args: dict[str, Any] = {}
        for name in ("before", "after", "limit"):
            value = validate.query_int(req.query, name)
            if value is not None:
                args[name] = value
        return Response(200, self.messenger.history_page(req.user_id, channel_id, args))

    async def channels(self, req: Request) -> Response:
        return Response(200, self.groups.channel_list(req.user_id, req.query))

    async def create_group(self, req: Request) -> Response:
        return Response(201, await self.groups.create(req.user_id, req.json()))

    async def group(self, req: Request, channel_id: str) -> Response:
        return Response(200, self.groups.get(req.user_id, channel_id))

    async def add_member(self, req: Request, channel_id: str, user_id: str) -> Response:
        return Response(200, await self.groups.add(req.user_id, channel_id, user_id))

    async def remove_member(self, req: Request, channel_id: str, user_id: str) -> Response:
        await self.groups.remove(req.user_id, channel_id, user_id)
        return Response(204)

    async def presence_query(self, req: Request) -> Response:
        targets = [validate.user_id(u) for u in req.query.get("user_id", [])]
        return Response(200, {"presence": await self.presence.query(req.user_id, targets)})

    async def push_subscribe(self, req: Request) -> Response:
        assert self.push is not None
        return Response(201, await self.push.subscribe(req.user_id, req.json()))

    async def push_unsubscribe(self, req: Request, sub_id: str) -> Response:
        assert self.push is not None
        await self.push.unsubscribe(req.user_id, sub_id)
        return Response(204)

    async def push_vapid(self, req: Request) -> Response:
        """The VAPID public key browsers subscribe with (``applicationServerKey``)."""
        assert self.push is not None
        return Response(200, {"public_key": self.push.vapid_public_key()})
