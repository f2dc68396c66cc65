"""A checker of statements of reasons against the EU DSA Transparency Database's rules,
written from its API documentation (resources/markdown/api-documentation.md) and the
validation rules it documents (app/Http/Requests/StatementStoreRequest.php, and the
allowed values in app/Models/Statement.php), at commit 69e80a0b of
github.com/digital-services-act/transparency-database."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

VISIBILITIES = {
    "DECISION_VISIBILITY_CONTENT_REMOVED", "DECISION_VISIBILITY_CONTENT_DISABLED",
    "DECISION_VISIBILITY_CONTENT_DEMOTED", "DECISION_VISIBILITY_CONTENT_AGE_RESTRICTED",
    "DECISION_VISIBILITY_CONTENT_INTERACTION_RESTRICTED", "DECISION_VISIBILITY_CONTENT_LABELLED",
    "DECISION_VISIBILITY_OTHER",
}  # fmt: skip
MONETARIES = {"DECISION_MONETARY_SUSPENSION", "DECISION_MONETARY_TERMINATION",
              "DECISION_MONETARY_OTHER"}  # fmt: skip
PROVISIONS = {
    "DECISION_PROVISION_PARTIAL_SUSPENSION", "DECISION_PROVISION_TOTAL_SUSPENSION",
    "DECISION_PROVISION_PARTIAL_TERMINATION", "DECISION_PROVISION_TOTAL_TERMINATION",
}  # fmt: skip
ACCOUNTS = {"DECISION_ACCOUNT_SUSPENDED", "DECISION_ACCOUNT_TERMINATED"}
ACCOUNT_TYPES = {"ACCOUNT_TYPE_BUSINESS", "ACCOUNT_TYPE_PRIVATE"}
GROUNDS = {"DECISION_GROUND_ILLEGAL_CONTENT", "DECISION_GROUND_INCOMPATIBLE_CONTENT"}
CONTENT_TYPES = {
    "CONTENT_TYPE_APP", "CONTENT_TYPE_AUDIO", "CONTENT_TYPE_IMAGE", "CONTENT_TYPE_PRODUCT",
    "CONTENT_TYPE_SYNTHETIC_MEDIA", "CONTENT_TYPE_TEXT", "CONTENT_TYPE_VIDEO", "CONTENT_TYPE_OTHER",
}  # fmt: skip
CATEGORIES = {
    f"STATEMENT_CATEGORY_{c}" for c in (
        "ANIMAL_WELFARE", "CONSUMER_INFORMATION", "CYBER_VIOLENCE", "CYBER_VIOLENCE_AGAINST_WOMEN",
        "DATA_PROTECTION_AND_PRIVACY_VIOLATIONS", "ILLEGAL_OR_HARMFUL_SPEECH",
        "INTELLECTUAL_PROPERTY_INFRINGEMENTS", "NEGATIVE_EFFECTS_ON_CIVIC_DISCOURSE_OR_ELECTIONS",
        "NOT_SPECIFIED_NOTICE", "OTHER_VIOLATION_TC", "PROTECTION_OF_MINORS",
        "RISK_FOR_PUBLIC_SECURITY", "SCAMS_AND_FRAUD", "SELF_HARM",
        "UNSAFE_AND_PROHIBITED_PRODUCTS", "VIOLENCE",
    )
}  # fmt: skip
SOURCES = {"SOURCE_ARTICLE_16", "SOURCE_TRUSTED_FLAGGER", "SOURCE_TYPE_OTHER_NOTIFICATION",
           "SOURCE_VOLUNTARY"}  # fmt: skip
AUTOMATED_DECISIONS = {"AUTOMATED_DECISION_FULLY", "AUTOMATED_DECISION_PARTIALLY",
                       "AUTOMATED_DECISION_NOT_AUTOMATED"}  # fmt: skip
YES_NO = {"Yes", "No"}
KNOWN = {
    "decision_visibility", "decision_visibility_other", "decision_monetary",
    "decision_monetary_other", "decision_provision", "decision_account", "account_type",
    "category_specification", "category_specification_other", "decision_ground",
    "decision_ground_reference_url", "illegal_content_legal_ground",
    "illegal_content_explanation", "incompatible_content_ground",
    "incompatible_content_explanation", "incompatible_content_illegal", "content_type",
    "content_type_other", "category", "category_addition", "territorial_scope",
    "content_language", "content_date", "application_date", "end_date_account_restriction",
    "end_date_monetary_restriction", "end_date_service_restriction",
    "end_date_visibility_restriction", "decision_facts", "source_type", "source_identity",
    "automated_detection", "automated_decision", "puid", "content_id",
}  # fmt: skip
PUID = re.compile(r"[a-zA-Z0-9\-_]+")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date(s: dict[str, Any], key: str, low: str | None, high: str = "2038-01-01") -> list[str]:
    value = s.get(key)
    if value is None:
        return []
    if not isinstance(value, str) or not DATE.fullmatch(value):
        return [f"{key} is not YYYY-MM-DD"]
    day = date.fromisoformat(value)
    if (low and day < date.fromisoformat(low)) or day > date.fromisoformat(high):
        return [f"{key} {value} is out of range"]
    return []


def _text(s: dict[str, Any], key: str, limit: int, required: bool) -> list[str]:
    value = s.get(key)
    if value is None or value == "":
        return [f"{key} is required"] if required else []
    if not isinstance(value, str) or len(value) > limit:
        return [f"{key} must be text of at most {limit} characters"]
    return []


def _one(s: dict[str, Any], key: str, allowed: set[str], required: bool = False) -> list[str]:
    value = s.get(key)
    if value is None:
        return [f"{key} is required"] if required else []
    return [] if value in allowed else [f"{key} {value!r} is not allowed"]


def _many(s: dict[str, Any], key: str, allowed: set[str], required: bool = False) -> list[str]:
    value = s.get(key)
    if value is None:
        return [f"{key} is required"] if required else []
    if not isinstance(value, list) or (required and not value):
        return [f"{key} must be an array" + (" with at least one value" if required else "")]
    return [f"{key} holds {v!r}, not allowed" for v in value if v not in allowed]


def problems(s: dict[str, Any]) -> list[str]:
    """Every rule the statement breaks (empty: it would be accepted)."""
    out = [f"unknown attribute {k}" for k in s if k not in KNOWN]
    decisions = ("decision_visibility", "decision_monetary", "decision_provision",
                 "decision_account")  # fmt: skip
    if all(not s.get(k) for k in decisions):
        out.append("one of decision_visibility, _monetary, _provision, _account is required")
    out += _many(s, "decision_visibility", VISIBILITIES)
    other = "DECISION_VISIBILITY_OTHER" in (s.get("decision_visibility") or [])
    out += _text(s, "decision_visibility_other", 500, other)
    out += _one(s, "decision_monetary", MONETARIES)
    out += _one(s, "decision_provision", PROVISIONS)
    out += _one(s, "decision_account", ACCOUNTS)
    out += _one(s, "account_type", ACCOUNT_TYPES)
    out += _one(s, "decision_ground", GROUNDS, required=True)
    illegal = s.get("decision_ground") == "DECISION_GROUND_ILLEGAL_CONTENT"
    out += _text(s, "illegal_content_legal_ground", 500, illegal)
    out += _text(s, "illegal_content_explanation", 2000, illegal)
    incompatible = s.get("decision_ground") == "DECISION_GROUND_INCOMPATIBLE_CONTENT"
    out += _text(s, "incompatible_content_ground", 500, incompatible)
    out += _text(s, "incompatible_content_explanation", 2000, incompatible)
    out += _one(s, "incompatible_content_illegal", YES_NO)
    out += _many(s, "content_type", CONTENT_TYPES, required=True)
    other_type = "CONTENT_TYPE_OTHER" in (s.get("content_type") or [])
    out += _text(s, "content_type_other", 500, other_type)
    out += _one(s, "category", CATEGORIES, required=True)
    out += _many(s, "category_addition", CATEGORIES)
    for key, low in (("content_date", "2000-01-01"), ("application_date", "2020-01-01")):
        out += _date(s, key, low) if key in s else [f"{key} is required"]
    for key in ("end_date_account_restriction", "end_date_monetary_restriction",
                "end_date_service_restriction", "end_date_visibility_restriction"):  # fmt: skip
        out += _date(s, key, None)
    out += _text(s, "decision_facts", 5000, True)
    out += _one(s, "source_type", SOURCES, required=True)
    out += _one(s, "automated_detection", YES_NO, required=True)
    out += _one(s, "automated_decision", AUTOMATED_DECISIONS, required=True)
    puid = s.get("puid")
    if not isinstance(puid, str) or len(puid) > 500 or not PUID.fullmatch(puid):
        out.append(f"puid {puid!r} must be 1 to 500 of [a-zA-Z0-9-_]")
    return out
