"""The ``webpush`` provider: standard Web Push, so browsers get notifications.

- Payload encryption: RFC 8291 (``aes128gcm``, RFC 8188) with ``http_ece``: a fresh P-256 key
  pair and salt per message, ECDH with the subscription's ``p256dh`` key and its ``auth``
  secret.
- Sender identity: RFC 8292 VAPID with ``py_vapid``: ``Authorization: vapid t=<ES256 JWT>,
  k=<public key>``, the JWT's ``aud`` the endpoint's origin, ``sub`` ``[push] vapid_subject``.
  The key pair is made on first start and kept in the data directory
  (``push_vapid.pem``, mode 0600); browsers subscribe with its public key
  (``GET /v1/push/vapid``).

pywebpush (which builds on the same two libraries) is not used: its sender is synchronous or
aiohttp, and chatd sends with its own trio client (``client.py``) to the checked address.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from chatd.push.guard import Target

KEY_FILE = "push_vapid.pem"
JWT_LIFETIME = 12 * 3600  # RFC 8292: at most 24 h
RECORD_SIZE = 4096


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Decode base64url with or without padding (browsers send it without); ValueError."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def check_keys(keys: object) -> dict[str, str]:
    """The subscription's ``keys`` if they are a P-256 public key (65-byte uncompressed point,
    base64url) and a 16-byte auth secret; ValueError otherwise."""
    if not isinstance(keys, dict):
        raise ValueError("keys must be an object {p256dh, auth}")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    if not isinstance(p256dh, str) or not isinstance(auth, str):
        raise ValueError("keys.p256dh and keys.auth must be base64url strings")
    point = unb64url(p256dh)
    if len(point) != 65 or point[0] != 4:
        raise ValueError("keys.p256dh must be an uncompressed P-256 point")
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)  # ValueError if off-curve
    if len(unb64url(auth)) != 16:
        raise ValueError("keys.auth must be 16 bytes")
    return {"p256dh": p256dh, "auth": auth}


def encrypt(plaintext: bytes, keys: dict[str, str]) -> bytes:
    """``plaintext`` encrypted for the subscription (aes128gcm: header, then the records)."""
    return http_ece.encrypt(  # type: ignore[no-any-return]
        plaintext,
        salt=os.urandom(16),
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=unb64url(keys["p256dh"]),
        auth_secret=unb64url(keys["auth"]),
        version="aes128gcm",
        rs=RECORD_SIZE,
    )


class Vapid:
    """This server's VAPID key pair (from the data directory) and the JWTs it signs."""

    def __init__(self, data_dir: str | Path, subject: str) -> None:
        self.path = Path(data_dir) / KEY_FILE
        self.subject = subject
        self.key = Vapid02.from_pem(_load_or_create(self.path))
        point = self.key.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        #: base64url of the uncompressed public key: a browser's ``applicationServerKey``.
        self.public_key = b64url(point)
        self._cache: dict[str, tuple[float, str]] = {}

    def authorization(self, audience: str) -> str:
        """The ``Authorization`` header for an endpoint of ``audience`` (its origin): one JWT
        per audience, signed again when less than half its lifetime is left."""
        now = time.time()
        cached = self._cache.get(audience)
        if cached is not None and cached[0] - now > JWT_LIFETIME / 2:
            return cached[1]
        exp = int(now) + JWT_LIFETIME
        claims = {"aud": audience, "exp": exp, "sub": self.subject}
        header: str = self.key.sign(claims)["Authorization"]
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[audience] = (exp, header)
        return header


def _load_or_create(path: Path) -> bytes:
    """The PEM private key at ``path``; made (P-256, mode 0600, written once) if missing."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return pem


def request(
    sub: dict[str, Any], target: Target, vapid: Vapid, data: bytes, *, ttl: int, topic: str
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(encrypted body, headers) of the POST to the subscription's endpoint. ``topic`` lets
    the push service replace an undelivered notification of the same channel (RFC 8030)."""
    raw = encrypt(data, sub["keys"])
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-encoding", b"aes128gcm"),
        (b"ttl", str(max(0, ttl)).encode()),
        (b"urgency", b"high"),
        (b"topic", b64url(hashlib.sha256(topic.encode()).digest()[:24]).encode()),
        (b"authorization", vapid.authorization(target.origin).encode()),
    ]
    return raw, headers
