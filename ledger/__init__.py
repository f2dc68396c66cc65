"""The write side: aggregates, the ruleset, and the Ledger application."""

from ledger.actors import SYSTEM, Actor, Role
from ledger.application import CommandResult, DueExpiry, Ledger
from ledger.database import Database
from ledger.errors import LedgerError

__all__ = [
    "SYSTEM",
    "Actor",
    "CommandResult",
    "Database",
    "DueExpiry",
    "Ledger",
    "LedgerError",
    "Role",
]
