"""The Python client library: HTTP API calls and WebSocket sessions (on trio-websocket)."""

from chatd.client.http import HttpClient, HttpError, HttpResponse
from chatd.client.session import ChatClient, ChatError, Session

__all__ = ["ChatClient", "ChatError", "HttpClient", "HttpError", "HttpResponse", "Session"]
