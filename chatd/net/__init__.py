"""The transport: listener, HTTP on h11, the WebSocket shell on wsproto, sockets."""
