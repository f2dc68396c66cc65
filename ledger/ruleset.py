"""The ruleset as data: rules, the sanction ladder, reach thresholds, categories, agreement.

The built-in default is `rulesets/prc_2014.toml`; `LEDGER_RULESET` may name another file
of the same shape. A malformed file is refused with a message naming the file, the key
and what is wrong.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_RULESET = Path(__file__).parent / "rulesets" / "prc_2014.toml"
NEWS_SCOPES = ("publish", "reprint")
INDEFINITE = "indefinite"


class RulesetError(Exception):
    """The ruleset file cannot be used."""


@dataclass(frozen=True)
class Agreement:
    id: str
    version: str
    sha256: str
    text: str
    baselines: tuple[str, ...]


@dataclass(frozen=True)
class Ruleset:
    id: str
    title: str
    rules: dict[str, str]
    ladder: tuple[str, ...]
    # level -> allowed durations in days; None in the tuple means indefinite.
    durations: dict[str, tuple[int | None, ...]]
    thresholds: dict[str, tuple[int, ...]]
    # category -> default political-news scope: "publish", "reprint" or "none".
    categories: dict[str, str]
    agreement: Agreement

    def default_scopes(self, category: str | None) -> frozenset[str]:
        scope = self.categories.get(category or "", "none")
        if scope == "publish":
            return frozenset(NEWS_SCOPES)
        if scope == "reprint":
            return frozenset({"reprint"})
        return frozenset()


def load_ruleset(path: str | Path | None = None) -> Ruleset:
    path = Path(path) if path else DEFAULT_RULESET
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RulesetError(f"ruleset {path}: cannot read the file: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RulesetError(f"ruleset {path}: not valid TOML: {e}") from None
    return _Parser(path, data).ruleset()


class _Parser:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def fail(self, key: str, problem: str) -> RulesetError:
        return RulesetError(f"ruleset {self.path}: key '{key}': {problem}")

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise self.fail(key, "missing")
            node = node[part]
        if not isinstance(node, kind) or (isinstance(node, bool) and kind is not bool):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(key, f"expected {names}, found {type(node).__name__}")
        return node

    def text(self, key: str) -> str:
        value: str = self.get(key, str)
        if not value.strip():
            raise self.fail(key, "must not be empty")
        return value

    def ruleset(self) -> Ruleset:
        rules = self.get("rules", dict)
        for rule_id, text in rules.items():
            if not isinstance(text, str) or not text.strip():
                raise self.fail(f"rules.{rule_id}", "a rule's text must be a non-empty string")
        return Ruleset(
            id=self.text("ruleset.id"),
            title=self.text("ruleset.title"),
            rules=dict(rules),
            ladder=self.ladder(),
            durations=self.durations(),
            thresholds=self.thresholds(),
            categories=self.categories(),
            agreement=self.agreement(set(rules)),
        )

    def ladder(self) -> tuple[str, ...]:
        ladder = self.get("sanctions.ladder", list)
        if not ladder or not all(isinstance(x, str) and x for x in ladder):
            raise self.fail("sanctions.ladder", "must be a non-empty list of level names")
        if len(set(ladder)) != len(ladder):
            raise self.fail("sanctions.ladder", "levels must be distinct")
        if "closed" not in ladder:
            raise self.fail("sanctions.ladder", "must contain the terminal level 'closed'")
        return tuple(ladder)

    def durations(self) -> dict[str, tuple[int | None, ...]]:
        ladder = self.ladder()
        table = self.data.get("sanctions", {}).get("durations", {})
        out: dict[str, tuple[int | None, ...]] = {}
        for level, allowed in table.items():
            key = f"sanctions.durations.{level}"
            if level not in ladder:
                raise self.fail(key, "names a level that is not on the ladder")
            if level == "closed":
                raise self.fail(key, "closure takes no duration; it ends only on appeal")
            if not isinstance(allowed, list) or not allowed:
                raise self.fail(key, "must be a non-empty list of days or 'indefinite'")
            parsed: list[int | None] = []
            for item in allowed:
                if item == INDEFINITE:
                    parsed.append(None)
                elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
                    parsed.append(item)
                else:
                    raise self.fail(
                        key, f"{item!r} is neither a positive number of days nor 'indefinite'"
                    )
            out[level] = tuple(parsed)
        return out

    def thresholds(self) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for metric in ("views", "reposts"):
            values = self.get(f"reach.{metric}", list)
            if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
                raise self.fail(f"reach.{metric}", "must be a list of positive whole numbers")
            out[metric] = tuple(sorted(set(values)))
        return out

    def categories(self) -> dict[str, str]:
        table = self.get("categories", dict)
        if not table:
            raise self.fail("categories", "must name at least one category")
        for name, scope in table.items():
            if scope not in (*NEWS_SCOPES, "none"):
                raise self.fail(f"categories.{name}", "must be 'publish', 'reprint' or 'none'")
        return dict(table)

    def agreement(self, rule_ids: set[str]) -> Agreement:
        text = self.text("agreement.text")
        sha = self.text("agreement.sha256").lower()
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != sha:
            raise self.fail("agreement.sha256", "does not match the SHA-256 of agreement.text")
        baselines = self.get("agreement.baselines", list)
        unknown = [b for b in baselines if b not in rule_ids]
        if unknown or not baselines:
            raise self.fail(
                "agreement.baselines", f"must name rules of the ruleset; unknown: {unknown}"
            )
        return Agreement(
            id=self.text("agreement.id"),
            version=self.text("agreement.version"),
            sha256=sha,
            text=text,
            baselines=tuple(baselines),
        )
