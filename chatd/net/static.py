"""The built-in web client's files (``chatd/web/static/``), served from memory at ``/`` and
``/static/<name>``.

The files are read once, when the server is built, so a request never touches the disk and a
path can name nothing but a file that was there at start (there is no path to traverse: a name
is a key in a dict). Every answer carries a strict Content-Security-Policy (the page may run
only its own scripts and styles and talk only to its own host, HTTP and WebSocket), a strong
ETag (a hash of the bytes; ``If-None-Match`` gets 304) and ``Cache-Control: no-cache``: the
browser keeps its copy but asks each time, so a new release is picked up at the next load and
an unchanged file costs a 304 with no body.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

from chatd.domain.errors import NotFound
from chatd.net.routing import Request, Response, Router, Text

PACKAGE = "chatd.web"  # the package whose ``static/`` folder holds the files
TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".json": b"application/json",
    ".webmanifest": b"application/manifest+json",
    ".txt": b"text/plain; charset=utf-8",
}
#: A Host header that may be echoed into the policy: a host name or address and a port, nothing
#: that could add a source (no space, quote, semicolon or scheme).
HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
BASE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "manifest-src 'self'; worker-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-cache"),
]


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: bytes
    etag: bytes  # strong: a quoted hash of the bytes


def load(package: str = PACKAGE) -> dict[str, Asset]:
    """Every file of ``<package>/static/`` (one level, known types only), read now."""
    assets = {}
    for entry in resources.files(package).joinpath("static").iterdir():
        suffix = PurePosixPath(entry.name).suffix
        if not entry.is_file() or suffix not in TYPES or entry.name.startswith("."):
            continue
        body = entry.read_bytes()
        etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        assets[entry.name] = Asset(body, TYPES[suffix], etag)
    return assets


def not_modified(request: Request, etag: bytes) -> bool:
    """``If-None-Match`` names this ETag (or ``*``): compared weakly, as RFC 9110 says."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag.decode() in tags


def policy(request: Request, ws_origins: tuple[str, ...]) -> bytes:
    """The Content-Security-Policy: ``connect-src`` is this host over HTTP(S) and WS(S), plus
    the server's own WebSocket origin (the login's ``ws_url``)."""
    sources = ["'self'"]
    host = request.headers.get("host", "")
    if HOST.match(host):
        sources += [f"ws://{host}", f"wss://{host}"]
    sources += [o for o in ws_origins if o not in sources]
    return f"{BASE_POLICY}; connect-src {' '.join(sources)}".encode()


class StaticSite:
    """The web client's routes: ``GET``/``HEAD`` of ``/`` and ``/static/<name>``."""

    def __init__(self, assets: dict[str, Asset], ws_url: str = "") -> None:
        self.assets = assets
        origin = re.match(r"^(wss?://[^/]+)", ws_url)
        self.ws_origins = (origin.group(1),) if origin else ()

    def add_routes(self, router: Router) -> None:
        router.add("GET", "/", self.index, auth=False)
        router.add("GET", "/static/{name}", self.file, auth=False)

    async def index(self, req: Request) -> Response:
        return self._answer(req, "index.html")

    async def file(self, req: Request, name: str) -> Response:
        return self._answer(req, name)

    def _answer(self, req: Request, name: str) -> Response:
        asset = self.assets.get(name)
        if asset is None:
            raise NotFound(f"no such file: {name}")
        headers = [
            *COMMON_HEADERS,
            (b"content-security-policy", policy(req, self.ws_origins)),
            (b"etag", asset.etag),
        ]
        if not_modified(req, asset.etag):
            return Response(304, None, headers)
        return Response(200, Text(asset.body, asset.content_type), headers)
