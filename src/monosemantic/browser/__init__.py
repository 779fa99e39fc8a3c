"""The feature browser: a read-only local web app over a run's feature database (TM's three views).

    queries.py    SQL against interp.db's schema (parameterised), returning plain dicts
    plots.py      inline SVG charts rendered on the server (no JS, no CDN)
    app.py        the Starlette app: HTML pages, their JSON twins under /api, errors
    export.py     the same pages as a static site that opens from disk
    synthetic.py  a synthetic feature database for tests, the benchmark and trying things out

It never imports torch: the live text view imports `interp.textview` inside its route.
"""
