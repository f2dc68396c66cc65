"""Webhook endpoints' rules: which URLs may receive, and the signing keys.

A URL is https, or http to a loopback address when `LEDGER_WEBHOOK_ALLOW_LOOPBACK=1`. Its
host must resolve only to public addresses (loopback allowed under the same switch): the
check runs at registration and again before every delivery, since DNS can change.
`LEDGER_WEBHOOK_HOSTS` (`name=address,…`) answers for the names it lists before DNS is
asked: a seam for tests and split-horizon set-ups, through which the same check runs.

Each endpoint's key material is a `whsec_` HMAC secret (scheme `v1`) and an Ed25519 key
pair (scheme `v1a`), generated here and kept beside the identity keys, wrapped by the KEK.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger import errors

SANCTION_TYPES = (
    "Account.SanctionImposed",
    "Account.SanctionLifted",
    "Account.SanctionAppealed",
    "Account.AppealDecided",
)
ROTATION_GRACE = timedelta(hours=24)
MAX_URL = 2000
SECRET_BYTES = 32
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[IpAddress]]


def loopback_allowed() -> bool:
    return os.environ.get("LEDGER_WEBHOOK_ALLOW_LOOPBACK", "") == "1"


def _static_hosts() -> dict[str, str]:
    pairs = (p.split("=", 1) for p in os.environ.get("LEDGER_WEBHOOK_HOSTS", "").split(","))
    return {name.strip().lower(): addr.strip() for name, addr in (p for p in pairs if len(p) == 2)}


def resolve(host: str, port: int) -> list[IpAddress]:
    """Every address `host` resolves to (the static hosts first, then DNS)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    static = _static_hosts().get(host.lower())
    if static is not None:
        return [ipaddress.ip_address(static)]
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise errors.WebhookUrlRefused("the URL's host does not resolve", host=host) from None
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and the name to present (Host, TLS SNI)."""

    url: str
    scheme: str
    host: str
    port: int
    address: IpAddress


def parse_url(url: str) -> tuple[str, str, int]:
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL:
        raise errors.InvalidArgument(f"url must be 1 to {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise errors.WebhookUrlRefused("the URL is malformed") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise errors.WebhookUrlRefused("the URL must be https:// with a host")
    if parts.username or parts.password:
        raise errors.WebhookUrlRefused("the URL must not carry credentials")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_url(url: str, resolver: Resolver = resolve) -> Target:
    """The URL's target when it may receive now; WebhookUrlRefused (or InvalidArgument)
    when not. Every address the host resolves to must be allowed, not only the first."""
    scheme, host, port = parse_url(url)
    addresses = resolver(host, port)
    loopback = loopback_allowed()
    for address in addresses:
        if address.is_loopback and loopback:
            continue
        if not address.is_global or address.is_multicast:
            raise errors.WebhookUrlRefused(
                "the URL resolves to a private, link-local or loopback address", host=host
            )
    if scheme == "http" and not (loopback and all(a.is_loopback for a in addresses)):
        raise errors.WebhookUrlRefused(
            "the URL must be https:// (http only to loopback, with LEDGER_WEBHOOK_ALLOW_LOOPBACK=1)"
        )
    if not addresses:
        raise errors.WebhookUrlRefused("the URL's host does not resolve", host=host)
    return Target(url, scheme, host, port, addresses[0])


# ----- key material --------------------------------------------------------------------


@dataclass(frozen=True)
class KeyMaterial:
    """An endpoint's secrets: the HMAC secret and the Ed25519 private key's seed."""

    hmac_secret: bytes
    ed25519_seed: bytes

    @classmethod
    def generate(cls) -> KeyMaterial:
        return cls(secrets.token_bytes(SECRET_BYTES), secrets.token_bytes(32))

    @classmethod
    def from_bytes(cls, raw: bytes) -> KeyMaterial:
        return cls(raw[:SECRET_BYTES], raw[SECRET_BYTES:])

    def to_bytes(self) -> bytes:
        return self.hmac_secret + self.ed25519_seed

    @property
    def secret(self) -> str:
        """The `whsec_` form, as receivers configure it (and the `standardwebhooks` package)."""
        return "whsec_" + base64.b64encode(self.hmac_secret).decode()

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.ed25519_seed)

    @property
    def public_key(self) -> str:
        """The `whpk_` form: base64 of the raw 32-byte Ed25519 public key."""
        raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return "whpk_" + base64.b64encode(raw).decode()
