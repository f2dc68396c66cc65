"""`ledger relay`: the log into NATS JetStream, exactly once, one subject per provider,
aggregate and event type. The stream is a derived copy of the log, rebuildable like a
projection. Only `api.relay.relay` and `api.relay.creds`' callers need nats-py; the
checkpoint, subjects and bodies import none of it (status and metrics read them)."""
