"""Signed webhooks (Standard Webhooks v1.0.0): the body, the signatures, the delivery
worker (`ledger deliver`). The endpoints are provider acts (ledger/commands.py), the
delivery state is in PostgreSQL (projections/webhooks.py)."""
