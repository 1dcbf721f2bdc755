"""Open-connection accounting: the total and per source address, counted at accept.

A connection is counted the moment ``accept`` returns it (not when its task first runs, so a
burst from the listen backlog cannot overshoot ``server.max_connections``) and given back
exactly once, by whichever task ends it: the HTTP connection, or the WebSocket connection it
was handed to. :meth:`ConnectionLimits.release` is keyed by the socket and idempotent.
"""

from __future__ import annotations

import enum
import socket
import sys

#: Connections beyond ``limits.max_connections_per_ip`` that are still read and answered 503
#: (so the client learns why); past these, more from that address are closed at accept.
REFUSING_PER_IP = 16
PER_IP_RETRY_AFTER = 5.0  # seconds, for a connection over limits.max_connections_per_ip


class Admission(enum.Enum):
    SERVE = "serve"
    REFUSE = "refuse"  # over the per-address cap: answer 503 with Retry-After, then close
    DROP = "drop"  # close at once, no response (not counted)


class ConnectionLimits:
    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.open = 0  # connections counted: being served, or being refused with a 503
        self.dropped = 0  # closed at accept, over a cap
        self.accepted = 0  # every connection accept() returned, dropped ones included
        self._per_ip: dict[str, int] = {}
        self._ip_of: dict[socket.socket, str] = {}

    def admit(self, sock: socket.socket, ip: str, *, proxy: bool = False) -> Admission:
        """Count a just-accepted socket from ``ip`` unless it is dropped; what to do with it.

        ``ip`` is the key the per-address cap counts (``chatd/net/proxies.limit_key``). A
        connection from a trusted ``proxy`` counts toward the total only, until its request
        names the client it speaks for (:meth:`speaks_for`)."""
        self.accepted += 1
        if proxy:
            if self.open >= self.max_total:
                self.dropped += 1
                return Admission.DROP
            self.open += 1
            self._ip_of[sock] = ""
            return Admission.SERVE
        count = self._per_ip.get(ip, 0)
        if self.open >= self.max_total or count >= self.max_per_ip + REFUSING_PER_IP:
            self.dropped += 1
            return Admission.DROP
        ip = sys.intern(ip)  # one string per address, however many connections it has
        self.open += 1
        self._per_ip[ip] = count + 1
        self._ip_of[sock] = ip
        return Admission.SERVE if count < self.max_per_ip else Admission.REFUSE

    def speaks_for(self, sock: socket.socket, ip: str) -> bool:
        """A proxy's connection now carries a request of the client keyed ``ip``: count it
        under that key instead (each request of a kept-alive connection may be another
        client's). False if that puts ``ip`` over its cap: answer 503 and close."""
        old = self._ip_of.get(sock)
        if old is None:
            return True  # already released
        if old == ip:
            return True
        self._uncount(old)
        count = self._per_ip.get(ip, 0)
        ip = sys.intern(ip)
        self._per_ip[ip] = count + 1
        self._ip_of[sock] = ip
        return count < self.max_per_ip

    def _uncount(self, ip: str) -> None:
        if not ip:
            return  # a proxy's connection not yet speaking for anyone
        count = self._per_ip[ip] - 1
        if count:
            self._per_ip[ip] = count
        else:
            del self._per_ip[ip]

    def release(self, sock: socket.socket) -> None:
        """The connection on ``sock`` has ended; a second call for it does nothing."""
        ip = self._ip_of.pop(sock, None)
        if ip is None:
            return
        self.open -= 1
        self._uncount(ip)

    def from_ip(self, ip: str) -> int:
        """Connections counted for ``ip``."""
        return self._per_ip.get(ip, 0)
