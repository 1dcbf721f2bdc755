"""HTTP in a cluster: any shard answers any request (docs/cluster.md).

:class:`Gateway` sits in front of the API routes on the public listener. A request that
belongs to a user homed on another shard (signup and login by the body's ``user_id``, every
other call by its token, which starts with the user_id) is forwarded whole to that shard's
peer listener, and its answer relayed unchanged. A request of a user homed here about a
channel sequenced elsewhere (a group, a channel's messages) or about a user homed elsewhere is
authenticated here and forwarded to the owner with the user asserted.

:class:`PeerApi` serves the peer listener: it refuses any call without the cluster secret
(403), answers the internal ``/peer/...`` routes, and runs forwarded public requests as if
they had arrived here (with the caller's address, or the asserted user).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

import trio

from chatd.cluster import wire
from chatd.cluster.peer import CLIENT_HEADER, HOPS_HEADER, USER_HEADER, PeerDown, Peers
from chatd.cluster.router import ClusterRouter
from chatd.domain import validate
from chatd.domain.accounts import Accounts
from chatd.domain.errors import ChatError, Forbidden, NotFound, Unavailable
from chatd.domain.messaging import Messenger
from chatd.domain.messaging_tx import Appended
from chatd.domain.presence import Presence
from chatd.net.api import Api
from chatd.net.errormap import error_body, http_status
from chatd.net.routing import Request, Response, Text, error_response
from storage import StorageUnavailable

log = logging.getLogger("chatd.cluster")
CHANNEL_ROUTE = re.compile(r"^/v1/(?:groups|channels)/([^/]+)(?:/|$)")
USER_ROUTE = re.compile(r"^/v1/users/([^/]+)$")
PASSED_HEADERS = ("retry-after", "allow")
MAX_HOPS = 2
PEER_HEADERS = ("x-chatd-secret", USER_HEADER, CLIENT_HEADER, HOPS_HEADER)


def token_user(token: str) -> str:
    """The user a token names (tokens are ``<user_id>.<random>``); "" if none."""
    user, dot, _ = token.partition(".")
    return user if dot and validate.USER_ID.fullmatch(user) else ""


def _body_user(body: bytes) -> str:
    try:
        user = json.loads(body).get("user_id")
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
        return ""
    return user if isinstance(user, str) and validate.USER_ID.fullmatch(user) else ""


class Gateway:
    def __init__(self, api: Api, router: ClusterRouter, peers: Peers, accounts: Accounts) -> None:
        self.api = api
        self.router = router
        self.peers = peers
        self.accounts = accounts

    async def dispatch(self, request: Request) -> Response:
        """A request from the public listener: the shards' own headers, if a client sent
        them, mean nothing here and are dropped before routing."""
        for name in PEER_HEADERS:
            request.headers.pop(name, None)
        return await self.route(request)

    async def route(self, request: Request) -> Response:
        """Answer here or forward to the owner (the peer listener enters here directly)."""
        try:
            owner = self._owner(request)
        except ChatError as exc:
            return error_response(exc)
        if owner is None:
            return await self.api.dispatch(request)
        return await self.forward(owner[0], request, asserted=owner[1])

    def _owner(self, request: Request) -> tuple[str, str] | None:
        """(shard, asserted user or "") that must answer ``request``; None: this shard."""
        if request.method == "POST" and request.path in ("/v1/signup", "/v1/login"):
            user = _body_user(request.body)
            home = self.router.home(user) if user else None
            return (home.shard, "") if home is not None and not home.local else None
        user = request.user_id or token_user(request.bearer())
        if not user:
            return None
        home = self.router.home(user)
        if not home.local:
            return (home.shard, "") if not request.user_id else None
        owner = ""
        if m := CHANNEL_ROUTE.match(request.path):
            place = self.router.sequencer(m.group(1))
            owner = "" if place.local else place.shard
        elif m := USER_ROUTE.match(request.path):
            if validate.USER_ID.fullmatch(m.group(1)):
                place = self.router.home(m.group(1))
                owner = "" if place.local else place.shard
        if not owner:
            return None
        if not request.user_id:  # authenticated here, where the token lives
            self.accounts.authenticate(request.bearer())
        return owner, user

    async def forward(self, shard: str, request: Request, *, asserted: str = "") -> Response:
        raw = request.headers.get(HOPS_HEADER, "0")
        hops = (int(raw) if raw.isdigit() and len(raw) <= 2 else MAX_HOPS) + 1
        if hops > MAX_HOPS:
            return error_response(Unavailable("cluster routing loop: check the discovery files"))
        headers = {CLIENT_HEADER: request.client, HOPS_HEADER: str(hops)}
        if asserted:
            headers[USER_HEADER] = asserted
        else:
            headers["authorization"] = request.headers.get("authorization", "")
        if "content-type" in request.headers:
            headers["content-type"] = request.headers["content-type"]
        target = request.path + (
            "?" + urlencode(request.query, doseq=True) if request.query else ""
        )
        method = "GET" if request.method == "HEAD" else request.method
        try:
            answer = await self.peers.request(
                shard, method, target, body=request.body, headers=headers
            )
        except PeerDown as exc:
            return error_response(
                Unavailable(f"shard {shard} is unreachable: {exc}", retry_after=1)
            )
        passed = [
            (k.encode(), v.encode()) for k, v in answer.headers.items() if k in PASSED_HEADERS
        ]
        if answer.status == 204 or not answer.body:
            return Response(answer.status, None, passed)
        kind = answer.headers.get("content-type", "application/json").encode()
        return Response(answer.status, Text(answer.body, kind), passed)


class PeerApi:
    """The peer listener's routes; every call must carry the cluster secret."""

    def __init__(
        self,
        secret: str,
        gateway: Gateway,
        messenger: Messenger,
        accounts: Accounts,
        router: ClusterRouter,
        presence: Presence,
        handed: Callable[[bytes], None],
    ) -> None:
        self.secret = secret.encode()
        #: a record answered in a reply: its destination has it (the publisher waits to send)
        self.handed = handed
        self.presence = presence
        self.gateway = gateway
        self.messenger = messenger
        self.accounts = accounts
        self.router = router

    async def dispatch(self, request: Request) -> Response:
        given = request.headers.get("x-chatd-secret", "").encode()
        if not hmac.compare_digest(given, self.secret):
            return error_response(Forbidden("peer calls need the cluster secret"))
        request.client = request.headers.get(CLIENT_HEADER, request.client)
        try:
            if request.path == "/peer/send" and request.method == "POST":
                return await self._send(request)
            if request.path.startswith("/peer/exists/") and request.method == "GET":
                user = request.path.rsplit("/", 1)[1]
                if self.accounts.store.account(user) is None:
                    raise NotFound(f"no user {user!r}")
                return Response(200, {"user_id": user})
            if request.path == "/peer/presence" and request.method == "GET":
                users = request.query.get("user_id", [])
                return Response(200, {"presence": [self.presence.status(u) for u in users]})
        except ChatError as exc:
            return _packed(http_status(exc), error_body(exc))
        except StorageUnavailable as exc:
            return _packed(503, {"error": "unavailable", "message": str(exc)})
        request.user_id = request.headers.get(USER_HEADER, "")
        return await self.gateway.route(request)

    async def _send(self, request: Request) -> Response:
        """A batch of sends forwarded by their senders' home shard: each is queued for the
        next commits in order (so one sender's messages keep their order) and answered with
        its ack and the record for the sender's home, or its error."""
        try:
            sends = [
                (x["sender"], x["ref"], x["channel"], x["body"])
                for x in wire.unpack(request.body)["sends"]
            ]
            if not all(isinstance(v, str) for send in sends for v in send):
                raise TypeError("sender, ref, channel and body must be strings")
        except (ValueError, KeyError, TypeError) as exc:
            return _packed(400, {"error": "bad_request", "message": f"bad peer send: {exc}"})
        results: list[dict[str, Any]] = [{} for _ in sends]
        left = len(sends)
        finished = trio.Event()

        def answer(i: int, result: dict[str, Any]) -> None:
            nonlocal left
            results[i] = result
            left -= 1
            if not left:
                finished.set()

        def done(i: int, sender: str, appended: Appended | None, error: Exception | None) -> None:
            if appended is None:
                answer(i, _error_result(error))
                return
            record = appended.relayed.get(self.router.home(sender).shard)
            if record is not None:
                self.handed(record)
            answer(i, {"ack": appended.ack, "record": record})

        for i, (sender, ref, channel, body) in enumerate(sends):
            try:
                self.messenger.submit_forwarded(
                    sender, ref, channel, body, partial(done, i, sender)
                )
            except (ChatError, StorageUnavailable) as exc:
                answer(i, _error_result(exc))
        if left:
            await finished.wait()
        return _packed(200, {"results": results})


def _error_result(error: BaseException | None) -> dict[str, Any]:
    if isinstance(error, StorageUnavailable):
        error = Unavailable(str(error))
    if not isinstance(error, ChatError):
        log.error("forwarded send failed", exc_info=error)
        error = Unavailable("message not stored")
    result: dict[str, Any] = {"error": error.code, "message": str(error)}
    if error.retry_after is not None:
        result["retry_after"] = error.retry_after
    return result


def _packed(status: int, value: object) -> Response:
    return Response(status, Text(wire.pack(value), b"application/msgpack"))
