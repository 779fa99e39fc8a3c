"""STAGE 7: the paper's analyses, each a step that reads the feature database and the run and
writes its own tables: ablations and pinned samples, feature splitting and automata, the feature
map, proxies (case studies), universality, automated interpretability.

`steps.STEPS` is the registry; the caller (the CLI, `monosemantic.pipeline`) picks from it and
passes the steps to `features.build.build_features`. `loader` is the one place that loads a
database's dictionaries with their weights.
"""
