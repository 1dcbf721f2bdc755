"""Calls to other shards' peer listeners: HTTP/1.1 on h11, keep-alive, with the cluster secret.

A shard forwards to another what that one owns: requests of users homed there, sends to
channels it sequences (docs/cluster.md). Each call takes an idle kept-alive connection to that
shard (or opens one), sends the request with ``x-chatd-secret``, and puts the connection back.
"""

from __future__ import annotations

from collections import defaultdict

import trio

from chatd.client.http import ConnectionLost, HttpClient, HttpResponse

SECRET_HEADER = "x-chatd-secret"
USER_HEADER = "x-chatd-user"  # the user a peer call acts for, checked by the calling shard
CLIENT_HEADER = "x-chatd-client"  # the address of the client a forwarded request came from
HOPS_HEADER = "x-chatd-hops"


class PeerDown(ConnectionError):
    """The other shard did not answer."""


class Peers:
    def __init__(
        self, addresses: dict[str, tuple[str, int]], secret: str, *, timeout: float = 5.0
    ) -> None:
        self.addresses = addresses
        self.secret = secret
        self.timeout = timeout
        self.idle: defaultdict[str, list[HttpClient]] = defaultdict(list)
        self.max_idle = 64

    async def request(
        self,
        shard: str,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        """One call to ``shard``'s peer listener; PeerDown if it cannot be reached."""
        pool = self.idle[shard]
        if pool:
            client = pool.pop()
        else:
            host, port = self.addresses[shard]
            client = HttpClient(f"http://{host}:{port}", timeout=self.timeout)
        extra = {SECRET_HEADER: self.secret, **(headers or {})}
        try:
            response = await client.request(method, path, raw=body, headers=extra)
        except (OSError, ConnectionLost, trio.TooSlowError) as exc:
            await client.aclose()
            raise PeerDown(f"shard {shard}: {exc}") from None
        except BaseException:
            await client.aclose()
            raise
        if len(pool) < self.max_idle:
            pool.append(client)
        else:
            await client.aclose()
        return response

    async def aclose(self) -> None:
        for pool in self.idle.values():
            for client in pool:
                await client.aclose()
            pool.clear()
