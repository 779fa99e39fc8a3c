"""The analyses that run inside `features build`, in order, after the core records (build.py).

Each is `(name, step)` with `step(conn, layout, cfg)`: it reads what it needs from the open
database (examples carry `ctx_offset`/`ctx_pos` to re-run a forward) and the run directory, and
writes its own tables (db.py). A step with its own settings wraps them, e.g.
`("ablations", lambda conn, layout, cfg: run_ablations(conn, layout, AblationConfig()))`.
Add one line per analysis here; `build_features(..., steps=[...])` overrides the list.
"""

from __future__ import annotations

from monosemantic.interp.build import Step

STEPS: list[tuple[str, Step]] = []
