"""TLS in front: Debian's nginx, running ``conf/nginx.conf.example`` (ports, paths and the
upstream address replaced), terminates TLS for a real chatd with a self-signed certificate;
signup, login and a ``wss://`` chat go through it, and chatd counts the client's address
(from nginx's X-Forwarded-For), not nginx's, and not what the client claims.

Skipped when nginx is not installed (scripts/test and .ci/run install it when root)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from trio_websocket import open_websocket_url

from chatd.server import Server
from tests.conftest import PASSWORD, make_config, running

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "conf" / "nginx.conf.example"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
PROXY_FROM = "127.0.0.2"  # nginx connects to chatd from here: the only trusted proxy
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt install nginx)")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chatd test")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render(directory: Path, chatd_port: int, tls_port: int, cert: Path, key: Path) -> Path:
    """The example as a runnable nginx.conf: loopback ports, the test's certificate, temp
    paths in ``directory``, and upstream connections from :data:`PROXY_FROM`."""
    site = EXAMPLE.read_text()
    replacements = {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{chatd_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{tls_port} ssl;",
        "listen [::]:443 ssl;": "",
        "listen 80;": f"listen 127.0.0.1:{free_port()};",
        "listen [::]:80;": "",
        "/etc/ssl/chatd/fullchain.pem": str(cert),
        "/etc/ssl/chatd/privkey.pem": str(key),
        "proxy_connect_timeout 5s;": f"proxy_connect_timeout 5s;\n    proxy_bind {PROXY_FROM};",
    }
    for old, new in replacements.items():
        assert old in site, f"conf/nginx.conf.example no longer has {old!r}"
        site = site.replace(old, new)
    (directory / "chatd.conf").write_text(site)
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {directory / "access.log"};
{temp}
    include {directory / "chatd.conf"};
}}
"""
    path = directory / "nginx.conf"
    path.write_text(main)
    return path


def https(
    port: int, method: str, path: str, body: Any, context: ssl.SSLContext, **headers: str
) -> tuple[int, Any]:
    """One HTTPS request through nginx (urllib, in a thread): (status, decoded JSON or None)."""

    def call() -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}{path}", data=data, method=method, headers=headers
        )
        if data is not None:
            request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            if not exc.headers.get("content-type", "").startswith("application/json"):
                return exc.code, raw  # nginx's own page
            return exc.code, json.loads(raw) if raw else None

    return trio.to_thread.run_sync(call)  # type: ignore[return-value]


async def wait_listening(port: int, proc: trio.Process, log: Path) -> None:
    with trio.fail_after(10):
        while True:
            if proc.returncode is not None:
                text = await trio.Path(log).read_text()
                raise AssertionError(f"nginx exited {proc.returncode}:\n{text}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def test_login_and_a_wss_chat_through_nginx(tmp_path: Path) -> None:
    assert NGINX is not None
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    tls_port = free_port()
    public = f"https://127.0.0.1:{tls_port}"
    config = make_config(
        tmp_path / "data",
        server={"trusted_proxies": (f"{PROXY_FROM}/32",), "public_url": public},
        limits={"login_rate": 0.001, "login_burst": 6},
    )
    async with running(config) as server:
        conf = render(tmp_path, server.port, tls_port, cert, key)
        with trio.fail_after(5):
            check = await trio.run_process(
                [NGINX, "-t", "-c", str(conf)], capture_stderr=True, check=False
            )
        assert check.returncode == 0, check.stderr.decode()
        async with trio.open_nursery() as nursery:
            run = partial(trio.run_process, [NGINX, "-c", str(conf)], check=False)
            proc: trio.Process = await nursery.start(run)
            try:
                await wait_listening(tls_port, proc, tmp_path / "error.log")
                await chat_through(server, tls_port, context, public)
            finally:
                proc.terminate()  # nginx, which this test started: by its pid


async def chat_through(server: Server, port: int, context: ssl.SSLContext, public: str) -> None:
    for user in ("alice", "bob"):
        status, body = await https(
            port, "POST", "/v1/signup", {"user_id": user, "password": PASSWORD}, context
        )
        assert status == 201, body
    tokens = {}
    for user in ("alice", "bob"):
        # A client's own X-Forwarded-For is kept by nginx but left of nginx's hop: not believed.
        status, body = await https(
            port,
            "POST",
            "/v1/login",
            {"user_id": user, "password": PASSWORD},
            context,
            **{"X-Forwarded-For": f"203.0.113.{len(tokens)}"},
        )
        assert status == 200, body
        assert body["ws_url"] == public.replace("https://", "wss://") + "/v1/ws"
        tokens[user] = body["token"]
    # The login limit counts 127.0.0.1 (the client), whatever the client claimed: 6 in all.
    statuses = [
        (
            await https(
                port, "POST", "/v1/login", {}, context, **{"X-Forwarded-For": f"198.51.100.{i}"}
            )
        )[0]
        for i in range(5)
    ]
    assert statuses == [400, 400, 400, 400, 429]
    status, me = await https(
        port, "GET", "/v1/me", None, context, Authorization=f"Bearer {tokens['alice']}"
    )
    assert status == 200 and me["user_id"] == "alice"

    assert (await https(port, "GET", "/metrics", None, context))[0] == 403  # not public
    status, health = await https(port, "GET", "/healthz", None, context)
    assert status == 200 and health["status"] == "ok"

    url = public.replace("https://", "wss://") + "/v1/ws"
    origin = [("Origin", public)]  # a browser on the public origin: the same-origin default
    async with (
        open_websocket_url(
            url, ssl_context=context, subprotocols=["chatd.v1.json"], extra_headers=origin
        ) as a,
        open_websocket_url(url, ssl_context=context, subprotocols=["chatd.v1.json"]) as b,
    ):
        with trio.fail_after(10):
            for ws, user in ((a, "alice"), (b, "bob")):
                await ws.send_message(json.dumps({"type": "hello", "token": tokens[user]}))
                assert json.loads(await ws.get_message())["type"] == "welcome"
            # chatd counts these connections against the client's address, not nginx's.
            connections = server.app.lifecycle.connections
            assert connections.from_ip("127.0.0.1") >= 2 and connections.from_ip(PROXY_FROM) == 0
            await a.send_message(
                json.dumps({"type": "send", "ref": "r1", "to": "bob", "body": "over TLS"})
            )
            ack = await next_of(a, "ack")
            msg = await next_of(b, "msg")
            assert msg["body"] == "over TLS" and msg["msg_id"] == ack["msg_id"] == 1
            await b.send_message(json.dumps({"type": "ping"}))
            await next_of(b, "pong")


async def next_of(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        frame = json.loads(await ws.get_message())
        if frame["type"] == kind:
            return frame  # type: ignore[no-any-return]
        assert frame["type"] in ("presence", "msg", "ack"), frame
