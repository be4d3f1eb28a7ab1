"""The element emulator's tokens: Basic client credentials in, JWT-looking id_tokens out.

Used by ``element.ElementApi`` only. The tokens are real HS256 JWTs signed with a fixed,
public key: they only need to look like the console's and let the emulator tell a
malformed token (400 ``invalid_request``) from an expired or revoked one (401).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

__all__ = ["basic_credentials", "sign", "token_id"]

# Not a secret: it only makes the emulator's tokens look and verify like signed JWTs.
_SIGNING_KEY = hashlib.sha256(b"converge-emulator:element").digest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def sign(claims: dict[str, Any]) -> str:
    """``header.payload.signature`` for these claims."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(_SIGNING_KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def basic_credentials(header: str) -> tuple[str, str]:
    """``("", "")`` when the header is not usable Basic auth."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    client_id, _, secret = decoded.partition(":")
    return client_id, secret


def token_id(token: str) -> str | None:
    """The ``jti`` of a well-formed token signed by this emulator, else None (malformed)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header, payload, signature = parts
    expected = hmac.new(_SIGNING_KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64url(signature), expected):
            return None
        claims = json.loads(_unb64url(payload))
    except (binascii.Error, ValueError):
        return None
    jti = claims.get("jti") if isinstance(claims, dict) else None
    return jti if isinstance(jti, str) else None
