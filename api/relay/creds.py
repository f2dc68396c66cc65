"""Per-provider NATS credentials: a user entry for the server's `authorization` block that
may read `ledger.<code>.>` and nothing else (no nats-py needed).

With JetStream, reading goes through consumers, so the entry allows:
- subscribing to `ledger.<code>.>` (core NATS, live) and to the user's own inbox prefix
  `_INBOX_<code>.>` (where pulled messages and API replies arrive; another provider's
  inbox stays closed to it);
- creating a consumer only through the subject that names its filter,
  `$JS.API.CONSUMER.CREATE.<stream>.<name>.ledger.<code>.>` (the server refuses a
  config whose filter differs from the subject's), and only under the names given here;
- using those consumers (info, next message, acks, delete), and `$JS.API.INFO`.
A consumer's name is one token, so names are fixed here, prefixed with the provider's
token and `~` (never in a token): another provider can neither create nor pull from them.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from api.relay.subjects import provider_filter, token

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    inbox_prefix: str
    consumers: tuple[str, ...]
    filter: str
    server_entry: str  # for the server's `authorization { users = [...] }`


def consumer_name(provider_code: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"a consumer name is 1-64 letters, digits, '-' or '_', not {name!r}")
    return f"{token(provider_code)}~{name}"


def credentials(
    provider_code: str, stream: str, names: tuple[str, ...] = ("main",), password: str = ""
) -> Credentials:
    tok = token(provider_code)
    subjects = provider_filter(provider_code)
    consumers = tuple(consumer_name(provider_code, n) for n in names)
    inbox = f"_INBOX_{tok}"
    publish = ["$JS.API.INFO"]
    for c in consumers:
        publish += [
            f"$JS.API.CONSUMER.CREATE.{stream}.{c}.{subjects}",
            f"$JS.API.CONSUMER.INFO.{stream}.{c}",
            f"$JS.API.CONSUMER.DELETE.{stream}.{c}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{c}",
            f"$JS.ACK.{stream}.{c}.>",
        ]
    user = f"ledger-{tok}"
    password = password or secrets.token_urlsafe(24)
    entry = {
        "user": user,
        "password": password,
        "permissions": {
            "publish": {"allow": publish},
            "subscribe": {"allow": [subjects, f"{inbox}.>"]},
        },
    }
    # NATS configuration accepts JSON maps; quoted strings keep `$`, `>` and `%` literal.
    text = f"# the ledger's provider {json.dumps(provider_code)}\n" + json.dumps(entry, indent=2)
    return Credentials(user, password, inbox, consumers, subjects, text)


def client_settings(creds: Credentials, url: str, stream: str) -> str:
    """What the provider's system needs, as environment lines."""
    return "\n".join(
        [
            f"NATS_URL={url}",
            f"NATS_USER={creds.user}",
            f"NATS_PASSWORD={creds.password}",
            f"NATS_INBOX_PREFIX={creds.inbox_prefix}",
            f"NATS_STREAM={stream}",
            f"NATS_FILTER={creds.filter}",
            f"NATS_CONSUMERS={','.join(creds.consumers)}",
            "",
        ]
    )
