"""The Python client library: HTTP API calls and WebSocket sessions (on trio-websocket)."""

from chatd.client.client import ChatClient
from chatd.client.http import ConnectionLost, HttpClient, HttpError, HttpResponse
from chatd.client.session import ChatError, Session

__all__ = [
    "ChatClient",
    "ChatError",
    "ConnectionLost",
    "HttpClient",
    "HttpError",
    "HttpResponse",
    "Session",
]
