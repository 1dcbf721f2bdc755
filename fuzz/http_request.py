"""Harness: raw bytes into the HTTP layer (``chatd/net/http.py`` on h11, then routing,
validation, the handlers, LMDB) of a real in-process server (``fuzz/inprocess.py``).

The input is what a client writes on one connection: any number of pipelined requests, any
framing, a WebSocket upgrade and frames after it. ``$TOKEN`` in it becomes a valid bearer token
of user ``alice`` and ``$GROUP`` a group alice and ``bob`` are in, so the seeds (and what
libFuzzer makes of them) get past authentication. A crash is an error chatd logs (a 500, a
WebSocket closed 1011), a 500 on the wire, or a connection that does not end once the client
has half-closed.
"""

from __future__ import annotations

from fuzz.inprocess import InProcessServer

MAX_LEN = 4096
TIMEOUT = 10

_server: InProcessServer | None = None
_subst: dict[bytes, bytes] = {}


def server() -> InProcessServer:
    """The shared server, started on first use with its users, a group and a message."""
    global _server
    if _server is None:
        _server = InProcessServer()
        token = _server.user("alice")
        _server.user("bob")
        group = _server.request("POST", "/v1/groups", {"name": "team", "members": ["bob"]}, token)
        assert isinstance(group, dict), group
        _subst[b"$TOKEN"] = token.encode()
        _subst[b"$GROUP"] = str(group["channel_id"]).encode()
    return _server


def substitute(data: bytes) -> bytes:
    for name, value in _subst.items():
        data = data.replace(name, value)
    return data


def TestOneInput(data: bytes) -> None:  # noqa: N802 (libFuzzer's name)
    srv = server()
    srv.exchange(substitute(data))


def close() -> None:
    if _server is not None:
        _server.close()
