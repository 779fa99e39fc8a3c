"""HTML rendering shared by the live app and the static export: templates, links, shaded tokens.

Corpus text is untrusted (a scraped corpus holds `<script>` tags and `javascript:` URLs). Three
layers keep it text: Jinja autoescaping on every template; `shade`, which builds token spans with
`html.escape` and shows invisible format characters (bidi overrides, zero-width joiners) as
visible `⟨U+202E⟩` marks inside an isolated span; and `json_script`, which embeds data for the
small scripts with `<`, `>` and `&` escaped so no string can close its `<script>` element.
The live app also sends a Content-Security-Policy that only allows the app's own scripts.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup

from monosemantic.browser import plots

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class Links:
    """URLs of every page. Live: `/dict/3/feature/17`; `export=True`: flat relative file names."""

    def __init__(self, export: bool = False) -> None:
        self.export = export

    def overview(self) -> str:
        return "index.html" if self.export else "/"

    def dictionary(self, d: int, page: int = 1, **params: Any) -> str:
        if self.export:
            return f"dict-{d}.html" if page == 1 else f"dict-{d}-p{page}.html"
        params = {k: v for k, v in params.items() if v not in (None, "", False)}
        if page != 1:
            params["page"] = page
        return f"/dict/{d}" + (f"?{urlencode(params)}" if params else "")

    def feature(self, d: int, f: int) -> str:
        return f"feature-{d}-{f}.html" if self.export else f"/dict/{d}/feature/{f}"

    def feature_template(self, d: int) -> str:
        """The feature URL with `{f}` for the feature, for scripts."""
        return self.feature(d, 0).replace("-0.html", "-{f}.html") if self.export else f"/dict/{d}/feature/{{f}}"

    def map(self, d: int) -> str:
        return f"map-{d}.html" if self.export else f"/dict/{d}/map"

    def text(self, **params: Any) -> str | None:
        return None if self.export else "/text" + (f"?{urlencode(params)}" if params else "")

    def static(self, name: str) -> str:
        return f"static/{name}" if self.export else f"/static/{name}"

    def api(self, path: str) -> str | None:
        """The JSON twin of the live page at `path` (none in a static export)."""
        return None if self.export else "/api" + path


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("monosemantic.browser", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals.update(shade=shade, histogram=plots.histogram, line_plot=plots.line_plot, json_script=json_script)
    env.filters.update(num=num, pct=pct, visible=visible)
    return env


def num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def pct(x: float | None) -> str:
    return "–" if x is None else (f"{100 * x:.3g}%" if x >= 1e-5 else f"{100 * x:.1e}%")


def _mark(ch: str) -> str:
    return f"⟨U+{ord(ch):04X}⟩"


def plain_visible(s: str | None) -> str:
    """`s` with format/control characters as ⟨U+XXXX⟩, for text that scripts show via textContent."""
    if not s:
        return ""
    return "".join(_mark(ch) if ch not in "\n\t" and unicodedata.category(ch) in ("Cf", "Cc") else ch for ch in s)


def visible(s: str | None) -> Markup:
    """Escaped text with format/control characters (bidi, zero-width) shown as ⟨U+XXXX⟩ and newlines as ⏎."""
    if s is None:
        return Markup("")
    out = []
    for ch in s:
        if ch == "\n":
            out.append("⏎")
        elif ch != "\t" and unicodedata.category(ch) in ("Cf", "Cc"):
            out.append(f'<span class="cf">{_mark(ch)}</span>')
        else:
            out.append(escape(ch))
    return Markup("".join(out))


def shade(
    tokens: Sequence[str],
    acts: Sequence[float | None],
    scale: float | None = None,
    ablation: Sequence[float | None] | None = None,
    max_index: int | None = None,
) -> Markup:
    """Token spans shaded by activation / `scale` (default: the max of `acts`), value in the title.

    `ablation` (paper.md §8's ablation view): per token, the change in log-likelihood of that token when the
    feature is ablated, drawn as an underline, blue where the feature made the token likelier
    (ablating it lowers the log-likelihood) and red where it made it less likely.
    """
    scale = scale or max((a or 0.0 for a in acts), default=0.0) or 1.0
    amax = max((abs(a) for a in ablation or () if a is not None), default=0.0) or 1.0
    out = []
    for i, tok in enumerate(tokens):
        a = acts[i] if i < len(acts) else None
        alpha = min(max((a or 0.0) / scale, 0.0), 1.0)
        style = f"background:rgba(255,110,0,{alpha:.2f})" if alpha > 0 else ""
        title = f"act {a:.3f}" if a else "act 0"
        cls = "tok max" if i == max_index else "tok"
        v = ablation[i] if ablation is not None and i < len(ablation) else None
        if v is not None:
            # the feature's effect is minus the ablation's: ablating lowered log p => the feature raised it
            colour = "40,90,255" if v < 0 else "230,40,40"
            w = abs(v) / amax
            style += f";border-bottom:3px solid rgba({colour},{w:.2f})"
            title += f" · ablation Δlog p {v:+.3f}"
        out.append(
            f'<span class="{cls}" style="{style}" title="{escape(title)}" data-act="{a or 0:.4g}">{visible(tok)}</span>'
        )
    return Markup('<span class="ctx">' + "".join(out) + "</span>")


def json_script(value: Any, element_id: str) -> Markup:
    """`<script type="application/json">` holding `value`; safe for any strings inside (Django's recipe)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(f'<script type="application/json" id="{escape(element_id)}">{text}</script>')
