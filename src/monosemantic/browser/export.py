"""`monosemantic export-html`: the browser's pages as a static site that opens from disk.

    OUT/index.html                 overview
    OUT/dict-<d>.html, -p<n>.html  feature list pages (sortable and filterable within the page)
    OUT/feature-<d>-<f>.html       one page per feature and neuron
    OUT/map-<d>.html               feature map
    OUT/static/                    the CSS and scripts

Same templates as the live app with file links (`Links(export=True)`); no text view (it needs the
model). The folder is built under a temporary name and renamed when complete, so an interrupted
export leaves no half-written site.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tqdm import tqdm

from monosemantic.browser import queries, views
from monosemantic.browser.render import Links, environment
from monosemantic.features import db

STATIC = Path(__file__).parent / "static"
EXPORT_CSP = (
    "default-src 'none'; script-src 'self' file:; style-src 'self' file: 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)


def export_html(db_path: Path, out: Path, force: bool = False, progress: bool = True) -> int:
    """Write the static site for the database at `db_path` into `out`; returns the number of pages.

    Raises FileExistsError if `out` exists and not `force`.
    """
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(out)
    conn = db.open_readonly(db_path)
    env, links = environment(), Links(export=True)
    nav = queries.dictionaries(conn)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    n_pages = 0

    def write(name: str, template: str, ctx: dict) -> None:
        nonlocal n_pages
        html = env.get_template(template).render(links=links, nav_dicts=nav, api=None, csp=EXPORT_CSP, **ctx)
        (tmp / name).write_text(html, encoding="utf-8")
        n_pages += 1

    try:
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
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        conn.close()
    return n_pages
