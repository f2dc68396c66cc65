#!/usr/bin/env python3
"""The image's entrypoint: the database password from a secret file, then the command.

The ledger reads its keys from files already (`<LEDGER_DATA_DIR>/cipher.key`,
`LEDGER_SIGNING_KEY`), but its database password only inside `LEDGER_DATABASE_URL`.
With `LEDGER_DATABASE_PASSWORD_FILE` set (a mounted secret), this writes the password to
libpq's password file (`PGPASSFILE`, mode 0600, owned by the container's user), which
libpq reads whenever the URL carries no password: every process of the container uses
it, `docker compose exec` and healthchecks included, and the password is never in the
image, the compose file or an environment variable. Then the command replaces this
process (`exec`), so it receives the container's signals itself.

Standard library only; the image's Python runs it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def fail(message: str) -> int:
    print(f"ledger-entrypoint: {message}", file=sys.stderr)
    return 2


def pgpass_line(password: str) -> str:
    """A password-file line for any host, port, database and user (`:` and `\\` escaped)."""
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


def write_pgpass(secret: Path, target: Path) -> None:
    password = secret.read_text(encoding="utf-8").rstrip("\r\n")
    if not password or "\n" in password:
        raise ValueError(f"{secret}: expected the password on one line")
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = target.with_name(target.name + ".new")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(pgpass_line(password))
    os.chmod(fresh, 0o600)
    fresh.replace(target)


def main(argv: list[str]) -> int:
    if not argv:
        return fail("no command to run")
    secret = os.environ.get("LEDGER_DATABASE_PASSWORD_FILE")
    if secret:
        target = Path(os.environ.get("PGPASSFILE") or Path.home() / ".pgpass")
        os.environ["PGPASSFILE"] = str(target)
        try:
            write_pgpass(Path(secret), target)
        except OSError as e:
            return fail(f"LEDGER_DATABASE_PASSWORD_FILE: {e.filename or secret}: {e.strerror}")
        except ValueError as e:
            return fail(f"LEDGER_DATABASE_PASSWORD_FILE: {e}")
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        return fail(f"{argv[0]}: {e.strerror}")
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
