"""Client addresses behind a reverse proxy, and the key an address is limited by.

A connection from an address in ``server.trusted_proxies`` speaks for someone else: the
client is read from the header the proxy sets (``server.proxy_header``: ``X-Forwarded-For`` or
``Forwarded``), walking the list from the right and skipping trusted hops, so the first
untrusted address is the client. A client can prepend whatever it likes to the header, but
it cannot change what the proxies it went through appended after it. From any other peer the
headers are ignored: the socket's address is the client.

Per-address limits (connections per IP, login and signup rates) key IPv6 clients by their
/64, the block one subscriber usually holds, so cycling through addresses of one's own
prefix buys nothing (:func:`limit_key`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from chatd.config import PROXY_HEADERS, ServerConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> Address | None:
    """An address as a forwarding header or a socket gives it: bare, ``[v6]``, ``[v6]:port``,
    ``v4:port`` or quoted (``Forwarded``); IPv4-mapped IPv6 as IPv4. None if it is not one
    (``unknown``, an obfuscated ``_name``, garbage)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def limit_key(address: str) -> str:
    """The key per-address limits count ``address`` under: IPv4 as is, IPv6 by its /64."""
    ip = parse_ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` of each element of a ``Forwarded`` header (RFC 7239), in order."""
    hops = []
    for element in value.split(","):
        found = "unknown"
        for pair in element.split(";"):
            name, _, val = pair.partition("=")
            if name.strip().lower() == "for":
                found = val
        hops.append(found)
    return hops


class TrustedProxies:
    def __init__(self, networks: Iterable[str], header: str = PROXY_HEADERS[0]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )
        self.header = header.lower()

    @classmethod
    def from_config(cls, server: ServerConfig) -> TrustedProxies:
        return cls(server.trusted_proxies, server.proxy_header)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusted(self, address: str) -> bool:
        """Whether ``address`` (a peer's, as the socket gives it) is a trusted proxy."""
        ip = parse_ip(address)
        return ip is not None and any(ip in net for net in self.networks)

    def client(self, peer: str, headers: dict[str, str]) -> str:
        """The client a request from ``peer`` is for: ``peer`` itself unless it is trusted;
        else the rightmost untrusted address of the forwarding header (the leftmost if every
        hop is trusted; the nearest trusted hop if the header is missing or malformed there)."""
        if not self.networks or not self.trusted(peer):
            return peer
        value = headers.get(self.header, "")
        hops = _forwarded_for(value) if self.header == "forwarded" else value.split(",")
        client = peer
        for hop in reversed([h for h in hops if h.strip()]):
            ip = parse_ip(hop)
            if ip is None:
                break  # not an address: nothing left of it can be believed
            client = str(ip)
            if not any(ip in net for net in self.networks):
                break
        return client
