"""Interpretation: the feature database and the paper's analyses (TM §4–5).

`db` (the SQLite schema, torch-free so the browser can read it) is the seam between this stage
and `browser`. Each analysis is its own module that reads activations or the database and writes
its own tables.
"""
