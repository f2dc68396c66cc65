"""The ruleset is data: the default loads, another file may replace it, a malformed one is
refused naming the file, the key and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import Ledger
from ledger import commands as c
from ledger.ruleset import DEFAULT_RULESET, RulesetError, load_ruleset
from tests.world import REGULATOR, World

DEFAULT = DEFAULT_RULESET.read_text()


def test_the_default_is_the_2014_provisions() -> None:
    rules = load_ruleset()
    assert rules.ladder == ("warning", "publishing_restricted", "updates_suspended", "closed")
    assert rules.durations["updates_suspended"] == (7, 15, 30, 90, None)
    assert rules.thresholds == {"views": (5000,), "reposts": (500,)}
    assert len(rules.agreement.baselines) == 7
    assert {"art.6", "art.7", "art.9"} <= set(rules.rules)
    assert rules.default_scopes("news_agency") == {"publish", "reprint"}
    assert rules.default_scopes("licensed_news_service") == {"reprint"}
    assert rules.default_scopes("enterprise") == frozenset()


BROKEN = {
    "missing ladder": (
        'ladder = ["warning", "publishing_restricted", "updates_suspended", "closed"]\n',
        "",
        "sanctions.ladder",
        "missing",
    ),
    "unknown level duration": (
        "updates_suspended = [7",
        "suspended = [7",
        "sanctions.durations.suspended",
        "not on the ladder",
    ),
    "bad duration": (
        '[7, 15, 30, 90, "indefinite"]\nupdates',
        "[0]\nupdates",
        "sanctions.durations.publishing_restricted",
        "positive number",
    ),
    "wrong agreement hash": (
        f'sha256 = "{load_ruleset().agreement.sha256}"',
        'sha256 = "00"',
        "agreement.sha256",
        "does not match",
    ),
    "bad scope": (
        'news_agency = "publish"',
        'news_agency = "everything"',
        "categories.news_agency",
        "must be",
    ),
    "threshold text": ("views = [5000]", 'views = ["many"]', "reach.views", "positive whole"),
    "unknown baseline": (
        '"baseline.laws", "baseline.socialist_system"',
        '"baseline.lawz", "baseline.socialist_system"',
        "agreement.baselines",
        "unknown",
    ),
    "empty rule": ('"art.1" = "Purpose', '"art.1" = "" #', "rules.art.1", "non-empty"),
    "not toml": ("[ruleset]", "[ruleset", "", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_malformed_ruleset_names_file_key_and_problem(tmp_path: Path, case: str) -> None:
    original, replacement, key, problem = BROKEN[case]
    assert original in DEFAULT, "the case no longer matches the default ruleset"
    broken = DEFAULT.replace(original, replacement, 1)
    path = tmp_path / "broken.toml"
    path.write_text(broken)
    with pytest.raises(RulesetError) as refused:
        load_ruleset(path)
    message = str(refused.value)
    assert str(path) in message and problem in message
    assert f"'{key}'" in message if key else True


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RulesetError, match="cannot read"):
        load_ruleset(tmp_path / "absent.toml")


def test_another_ruleset_changes_the_rules(make_ledger, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stricter = DEFAULT.replace("views = [5000]", "views = [100, 1000]").replace(
        'updates_suspended = [7, 15, 30, 90, "indefinite"]', "updates_suspended = [3]"
    )
    path = tmp_path / "stricter.toml"
    path.write_text(stricter)
    ledger: Ledger = make_ledger(ruleset=load_ruleset(path))
    world = World(ledger)
    post = world.post(world.account())
    value = world.run(c.RecordReach, post_id=post, views=1500, reposts=0)
    assert value["thresholds_crossed"] == ["views:100", "views:1000"]
    world.run(
        c.ImposeSanction,
        REGULATOR,
        account_id=world.account(),
        level="updates_suspended",
        rule_ids=["art.9"],
        reason="x",
        duration_days=3,
    )
