"""The C2SP surface: signed notes, checkpoints and witnesses (c2sp.org specifications).

Pure code: nothing here needs the ledger's database, so `ledger witness` runs without one.
"""
