"""The README and docs/ stay true to the tree: the README is short and starts with the two
commands, every relative link lands on a file (and a heading), every page says first what
it is for, and docs/configuration.md's table names exactly the `LEDGER_*` variables the
code reads. Reads files only: no database, no server."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
# The packages whose settings docs/configuration.md documents.
SOURCES = ("ledger", "projections", "api")
# The heading whose first table lists every variable the code reads.
TABLE_HEADING = "## Environment variables"

# String constants of the code that match LEDGER_[A-Z0-9_]+ but are not environment
# variables. Each is named with its reason; a name that no longer occurs fails the test,
# so this list cannot hide a variable by going stale.
NOT_VARIABLES = {
    "LEDGER_ERROR": "ledger/errors.py: the code of a LedgerError without a code of its own",
}
# Variables the code reads that are not LEDGER_* (found by reading os.environ / getenv
# with a name spelt out, or through a module-level constant); each must be in the table.
READ_CALLS = {"get", "getenv", "pop", "setdefault"}

LEDGER_NAME = re.compile(r"LEDGER_[A-Z0-9_]+")
# [text](target): the text may span lines; images (![…](…)) are links too.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def without_code(text: str) -> str:
    """The Markdown outside fenced blocks and inline code, where links are links."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation other than '-' and '_'
    dropped, spaces to '-'. (Markdown emphasis and code marks are punctuation too.)"""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file; a repeated slug gets -1, -2, … as on
    GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_slug_follows_github() -> None:
    assert slug("Backup and restore") == "backup-and-restore"
    assert slug("Queries, mutations, subscriptions") == "queries-mutations-subscriptions"
    assert slug("The API and its `ledger` command") == "the-api-and-its-ledger-command"
    assert slug("What's new: v1.2") == "whats-new-v12"
    assert slug("snake_case and kebab-case") == "snake_case-and-kebab-case"


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    size = len(text.encode("utf-8"))
    assert size <= 10_000, f"README.md is {size} bytes; move detail into docs/ (at most 10,000)"
    head = "\n".join(text.splitlines()[:6])
    assert "make run" in head and "make test" in head, (
        "the README's first lines must give `make run` and `make test`:\n" + head
    )


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in pages():
        for target in LINK.findall(without_code(page.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
                continue  # http:, https:, mailto:: not ours to check
            path_part, _, anchor = target.partition("#")
            file = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not file.exists():
                broken.append(f"{where}: no file {file.relative_to(ROOT)}")
            elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
                broken.append(f"{where}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert broken == [], "broken links:\n" + "\n".join(broken)


def test_every_docs_page_opens_with_what_it_is_for() -> None:
    missing = []
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        assert lines and lines[0].startswith("# "), f"{page.name}: the first line is a title"
        before = []
        for line in lines[1:]:
            if line.startswith("#"):
                break
            before.append(line)
        paragraphs = [p.strip() for p in "\n".join(before).split("\n\n") if p.strip()]
        first = " ".join(paragraphs[0].split()) if paragraphs else ""
        # A sentence: it starts with a word, not a table, list or code, and ends a sentence.
        if not re.fullmatch(r"[A-Za-z`\[].*[.!?]", first):
            missing.append(page.name)
    assert missing == [], (
        "these docs pages need a paragraph saying what they are for and who reads them"
        f" before their first section: {missing}"
    )


def source_files() -> list[Path]:
    return sorted(p for package in SOURCES for p in (ROOT / package).rglob("*.py"))


def string_constants(tree: ast.AST) -> list[str]:
    return [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def ledger_names_in_code() -> dict[str, set[str]]:
    """Each LEDGER_* name in a string constant of the sources (docstrings and f-strings
    included), with the files it is in."""
    found: dict[str, set[str]] = {}
    for file in source_files():
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        for value in string_constants(tree):
            for name in LEDGER_NAME.findall(value):
                found.setdefault(name, set()).add(str(file.relative_to(ROOT)))
    return found


def _name_of(node: ast.AST, constants: dict[str, str]) -> str | None:
    """The string a name argument spells: a literal, or a module-level constant."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def environment_reads_in_code() -> dict[str, set[str]]:
    """Every variable name the sources read from os.environ or os.getenv when the name is
    spelt out there or in a module-level constant: `os.environ.get("X")`,
    `os.environ["X"]`, `os.getenv(X)` with `X = "…"` at module level."""
    found: dict[str, set[str]] = {}
    for file in source_files():
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }

        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                func = node.func
                if (func.attr in READ_CALLS and _is_environ(func.value)) or func.attr == "getenv":
                    name = _name_of(node.args[0], constants)
            elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                name = _name_of(node.slice, constants)
            if name:
                found.setdefault(name, set()).add(str(file.relative_to(ROOT)))
    return found


def documented_variables() -> set[str]:
    """The first column of the first table under TABLE_HEADING in configuration.md."""
    text = CONFIGURATION.read_text(encoding="utf-8")
    assert TABLE_HEADING in text, f"docs/configuration.md has no '{TABLE_HEADING}' section"
    section = text.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) > 2, "docs/configuration.md: no table of variables"
    names = set()
    for row in rows[2:]:  # past the header and the |---| line
        first = row.strip("|").split("|")[0]
        names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first))
    return names


def test_not_variables_are_still_in_the_code() -> None:
    found = ledger_names_in_code()
    stale = sorted(name for name in NOT_VARIABLES if name not in found)
    assert stale == [], f"NOT_VARIABLES names that no longer occur in the code: {stale}"


def test_configuration_table_names_every_ledger_variable_the_code_reads() -> None:
    found = ledger_names_in_code()
    in_code = set(found) - set(NOT_VARIABLES)
    documented = {name for name in documented_variables() if name.startswith("LEDGER_")}
    undocumented = sorted(in_code - documented)
    unread = sorted(documented - in_code)
    message = []
    if undocumented:
        message.append(
            "read by the code but missing from docs/configuration.md's table: "
            + ", ".join(f"{n} ({', '.join(sorted(found[n]))})" for n in undocumented)
        )
    if unread:
        message.append(
            "in docs/configuration.md's table but read nowhere in ledger/, projections/, api/: "
            + ", ".join(unread)
        )
    assert not message, "\n".join(message)


def test_configuration_table_names_every_other_variable_the_code_reads() -> None:
    reads = environment_reads_in_code()
    assert "LEDGER_DATABASE_URL" in reads, "the scan for os.environ reads finds nothing"
    missing = sorted(set(reads) - documented_variables())
    assert missing == [], "read from the environment but missing from docs/configuration.md: " + (
        ", ".join(f"{n} ({', '.join(sorted(reads[n]))})" for n in missing)
    )
