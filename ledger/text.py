"""Which text the ledger accepts.

PostgreSQL cannot store NUL in text or jsonb, and a lone surrogate cannot be encoded
as UTF-8 at all; an event holding either would be refused by the read side forever.
Control characters make no sense in a name, a code or an id. So every string a
command carries is checked here before anything is written.
"""

from __future__ import annotations

import re

from ledger.errors import InvalidArgument

# NUL and the other C0 controls except tab, line feed and carriage return; DEL; the C1
# controls; lone surrogates (U+D800-U+DFFF only exist in Python str, never in UTF-8).
_NEVER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAKS = re.compile("[\t\n\r]")


def check_text(name: str, value: str, *, multiline: bool = False) -> None:
    """Raise InvalidArgument if `value` holds a character the ledger refuses.

    Free text (`multiline`) may hold tabs and line breaks; names, codes and ids may not.
    """
    bad = _NEVER.search(value) or (None if multiline else _LINE_BREAKS.search(value))
    if bad is not None:
        raise InvalidArgument(
            f"{name} must not contain the character U+{ord(bad.group()):04X}",
            field=name,
            position=bad.start(),
        )
