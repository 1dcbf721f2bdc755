"""The SSRF guard: a push URL must name a public host, checked when subscribing and again
right before each send (DNS can change in between), and the send connects to the address the
check passed, not to whatever a second lookup would return.

Refused: every address that is loopback, private, link-local, multicast, reserved,
unspecified or otherwise not globally reachable (``ipaddress``'s ``is_global``), for IPv4 and
IPv6, IPv4-mapped and -compatible IPv6 addresses judged as the IPv4 address they carry. A host
with several addresses is refused if any of them is non-public (so a resolver cannot slip a
private address in beside a public one). Schemes: ``https`` only; ``http`` too when
``[push] allow_private_networks`` is set (which also allows every address).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

MAX_URL = 2048


class Refused(Exception):
    """A push URL this server will not send to; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed push URL: where to connect and what to ask for."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``: the VAPID audience of a Web Push endpoint."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def parse(url: object, *, allow_private: bool) -> Target:
    """Check a URL's shape (scheme, host, port, no credentials); Refused if it is wrong."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise Refused(f"must be a URL of at most {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise Refused("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"is not a valid URL ({exc})") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise Refused("must use " + " or ".join(schemes))
    if parts.username is not None or parts.password is not None:
        raise Refused("must not carry credentials")
    host = parts.hostname
    if not host:
        raise Refused("must name a host")
    if not host.isascii():
        raise Refused("must name its host in ASCII (punycode for an international name)")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if not 0 < port < 65536:
        raise Refused("has a bad port")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url, parts.scheme, host, port, path)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def public(address: str) -> bool:
    """Whether ``address`` (an IP literal) is globally reachable unicast. An IPv6 address
    that carries an IPv4 one (mapped, NAT64, 6to4) is judged by the IPv4 address; the
    deprecated IPv4-compatible form and Teredo are refused."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return public(str(ip.ipv4_mapped))
        if ip in _NAT64:
            return public(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        if ip.sixtofour is not None:
            return public(str(ip.sixtofour))
        if ip.teredo is not None or (int(ip) >> 32 == 0):
            return False  # Teredo, ::, ::1 and the deprecated ::a.b.c.d
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


async def resolve(target: Target, *, allow_private: bool) -> str:
    """The address to connect to for ``target``: its host resolved, every address checked.
    Refused if it does not resolve or (unless ``allow_private``) any address is not public."""
    try:
        infos = await trio.socket.getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError) as exc:
        raise Refused(f"host {target.host!r} does not resolve") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise Refused(f"host {target.host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            if not public(address):
                raise Refused(f"host {target.host!r} resolves to a non-public address")
    return addresses[0]
