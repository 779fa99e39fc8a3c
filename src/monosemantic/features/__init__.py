"""STAGE 6: the feature database (`features build`): held-out tokens through the model and its
dictionaries, streamed into per-feature records, written to one SQLite file.

`db` (the schema and its read/write helpers) is torch-free: it is the seam with `browser`, which
imports nothing else from here. The paper's analyses that run after the core records live in
`monosemantic.analyses`; `build_features` runs the steps its caller passes in.
"""
