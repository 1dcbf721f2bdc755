"""A real HTTP receiver on a loopback port: what a webhook relay or a push service would be.

It records every request (method, path, headers, body) and answers with the next status of
``statuses`` (the last one repeats). ``stop()`` closes the listening socket (connections are
then refused: "receiver down"); ``start()`` listens again on the same port.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import h11
import trio


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=lambda: [200])
    requests: list[Received] = field(default_factory=list)
    attempts: int = 0  # requests answered, whatever the status
    port: int = 0
    _scope: trio.CancelScope | None = None
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self) -> list[Received]:
        """The requests answered with 2xx."""
        return [r for r in self.requests if r.headers.get("x-test-status", "200")[0] == "2"]

    async def start(self, nursery: trio.Nursery) -> None:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        listener = trio.SocketListener(sock)
        self._scope = trio.CancelScope()
        nursery.start_soon(self._serve, listener, self._scope)

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def _serve(self, listener: trio.SocketListener, scope: trio.CancelScope) -> None:
        with scope:
            async with listener, trio.open_nursery() as nursery:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert request is not None
            status = self.statuses[min(self.attempts, len(self.statuses) - 1)]
            self.attempts += 1
            headers = {k.decode(): v.decode() for k, v in request.headers}
            headers["x-test-status"] = str(status)
            self.requests.append(
                Received(request.method.decode(), request.target.decode(), headers, body)
            )
            self._changed.set()
            self._changed = trio.Event()
            reply = conn.send(h11.Response(status_code=status, headers=[("content-length", "2")]))
            await stream.send_all(reply + conn.send(h11.Data(data=b"ok")))
            await stream.send_all(conn.send(h11.EndOfMessage()))

    async def wait(self, count: int, *, delivered: bool = True, within: float = 10.0) -> None:
        """Until ``count`` requests (answered 2xx, with ``delivered``) arrived."""
        with trio.fail_after(within):
            while len(self.delivered() if delivered else self.requests) < count:
                await self._changed.wait()
