"""NATS subjects of logged events: `ledger.<provider>.<aggregate>.<event type>`.

A NATS subject token may not hold `.`, `*`, `>` or white space, and the ledger's provider
codes are free text. A token keeps ASCII letters, digits, `-` and `_` as they are and
writes every other byte of the UTF-8 text as `%XX` (upper-case hex), so the mapping is
reversible and a token never holds a wildcard or a separator. A leading `_` is escaped
too (`%5F`), which leaves the bare `_` free for an event whose owner the read side does not
know (a dead letter): `ledger._.Post.Published`. An empty code is `%`."""

from __future__ import annotations

import re
from functools import lru_cache

PREFIX = "ledger"
UNKNOWN = "_"
_SAFE = re.compile(rb"[A-Za-z0-9_-]")


def token(text: str) -> str:
    """`text` as one NATS subject token (see the module's rule)."""
    if not text:
        return "%"
    out = []
    for i, byte in enumerate(text.encode("utf-8", "surrogatepass")):
        char = bytes([byte])
        safe = _SAFE.fullmatch(char) and not (i == 0 and char == b"_")
        out.append(char.decode() if safe else f"%{byte:02X}")
    return "".join(out)


@lru_cache(maxsize=4096)  # a few providers and event types: computed once each
def subject(provider_code: str | None, event_type: str) -> str:
    """The subject of an event of `event_type` ("Account.SanctionImposed") about what the
    provider of `provider_code` owns (None: not known)."""
    aggregate, _, name = event_type.partition(".")
    owner = UNKNOWN if provider_code is None else token(provider_code)
    return f"{PREFIX}.{owner}.{token(aggregate)}.{token(name)}"


def provider_filter(provider_code: str) -> str:
    """The wildcard subject of everything about one provider: `ledger.<code>.>`."""
    return f"{PREFIX}.{token(provider_code)}.>"
