"""`monosemantic export-html`: the browser's pages as a static site that opens from disk.

    OUT/index.html                 overview
    OUT/dict-<d>.html, -p<n>.html  feature list pages (sortable and filterable within the page)
    OUT/feature-<d>-<f>.html       one page per feature and neuron
    OUT/map-<d>.html               feature map
    OUT/static/                    the CSS and scripts

    OUT/.monosemantic-export       the marker: this folder is an export, which --force may replace

Same templates as the live app with file links (`Links(export=True)`); no text view (it needs the
model). The folder is built under a temporary name and renamed when complete (`writers.building`),
so an interrupted export leaves no half-written site, and its leftovers go at the next export.

`--force` replaces only what an export made: an empty folder or one holding the marker. OUT is
never `.`, the run, a folder holding the run, or a folder inside it, nor a file or a symlink
(`writers.check_output`). The export reads the run and takes no lock on it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tqdm import tqdm

from monosemantic.browser import queries, views
from monosemantic.browser.render import Links, environment
from monosemantic.features import db
from monosemantic.writers import building, check_output, mark_export

STATIC = Path(__file__).parent / "static"
EXPORT_CSP = (
    "default-src 'none'; script-src 'self' file:; style-src 'self' file: 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)


def export_html(
    db_path: Path, out: Path, force: bool = False, progress: bool = True, source: Path | None = None
) -> int:
    """Write the static site for the database at `db_path` into `out`; returns the number of pages.

    `source` is what the user named (the run folder; default `db_path`), which `out` may neither be,
    hold nor lie in. Raises `UserError` for an `out` it must not write (`writers.check_output`): an existing
    one without `force`, or with `force` one that is not an earlier export.
    """
    out = Path(out)
    check_output(out, [source or db_path], force)
    conn = db.open_readonly(db_path)
    env, links = environment(), Links(export=True)
    nav = queries.dictionaries(conn)
    n_pages = 0
    try:
        with building(Path(os.path.abspath(out))) as tmp:

            def write(name: str, template: str, ctx: dict) -> None:
                nonlocal n_pages
                html = env.get_template(template).render(links=links, nav_dicts=nav, api=None, csp=EXPORT_CSP, **ctx)
                (tmp / name).write_text(html, encoding="utf-8")
                n_pages += 1

            mark_export(tmp, "export-html")
            shutil.copytree(STATIC, tmp / "static", ignore=shutil.ignore_patterns("text.js"))
            ctx = views.overview(conn)
            ctx["neuron_dict"] = next((d["id"] for d in nav if d["kind"] == "neurons"), None)
            write(links.overview(), "overview.html", ctx)
            total = sum(d["n_features"] for d in nav)
            bar = tqdm(total=total, desc="export-html", unit="page", disable=not progress)
            for d in nav:
                first = views.dictionary_page(conn, d["id"], queries.ListQuery())
                assert first is not None  # `d` comes from the nav: the dictionary exists
                for page in range(1, first["pages"] + 1):
                    listing = first if page == 1 else views.dictionary_page(conn, d["id"], queries.ListQuery(page=page))
                    assert listing is not None
                    write(links.dictionary(d["id"], page), "dictionary.html", listing)
                map_ctx = views.map_page(conn, d["id"])
                assert map_ctx is not None
                write(links.map(d["id"]), "map.html", map_ctx)
                for (f,) in conn.execute("SELECT feature FROM features WHERE dictionary_id = ? ORDER BY feature",
                                         (d["id"],)).fetchall():  # fmt: skip
                    feature_ctx = views.feature_page(conn, d["id"], f)
                    assert feature_ctx is not None  # the feature was just listed
                    write(links.feature(d["id"], f), "feature.html", feature_ctx)
                    bar.update()
            bar.close()
    finally:
        conn.close()
    return n_pages
