"""The Python client library: HTTP API calls and WebSocket sessions (on trio-websocket)."""

from chatd.client.client import ChatClient
from chatd.client.http import HttpClient, HttpError, HttpResponse
from chatd.client.session import ChatError, Session

__all__ = ["ChatClient", "ChatError", "HttpClient", "HttpError", "HttpResponse", "Session"]
