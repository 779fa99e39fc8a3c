"""The browser in a real browser: Playwright driving Debian's headless Chromium.

Skipped (with the reason) only when no `chromium` is installed and MONOSEMANTIC_REQUIRE_BROWSER is
unset; CI (.ci/run) installs chromium and sets it, so there these tests fail rather than skip.
Every test also checks that no request left the app (no CDN) and that no script ran from data
(a JavaScript dialog, which `alert(1)` in the corpus would open, fails the test).
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

from monosemantic.browser.app import create_app
from monosemantic.browser.export import export_html
from monosemantic.features.textview import TextView
from tests.browser.conftest import LiveServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM and not os.environ.get("MONOSEMANTIC_REQUIRE_BROWSER"):
    pytest.skip("no chromium on PATH (apt-get install chromium; CI sets MONOSEMANTIC_REQUIRE_BROWSER)",
                allow_module_level=True)  # fmt: skip
sync_api = pytest.importorskip("playwright.sync_api") if not os.environ.get("MONOSEMANTIC_REQUIRE_BROWSER") else (
    __import__("playwright.sync_api", fromlist=["sync_playwright"]))  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium():
    assert CHROMIUM, "MONOSEMANTIC_REQUIRE_BROWSER is set but no chromium is installed"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(browser_run):
    with LiveServer(create_app(browser_run, text_view=TextView)) as s:
        yield s


@pytest.fixture
def page(chromium, server):
    """A fresh page that records every request and fails the test on any JavaScript dialog."""
    context = chromium.new_context()
    pg = context.new_page()
    pg.requests, pg.dialogs, pg.errors = [], [], []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    assert not pg.dialogs, f"a script from the data ran: {pg.dialogs}"
    assert not pg.errors, f"script errors: {pg.errors}"
    outside = [u for u in pg.requests if not (u.startswith(server.url) or u.startswith("file://"))]
    assert not outside, f"requests outside the app: {outside}"
    context.close()


def shaded(pg) -> int:
    return pg.eval_on_selector_all(".tok", "els => els.filter(e => e.style.backgroundColor).length")


def test_overview_to_feature_with_shaded_tokens_and_hostile_text(page, server):
    page.goto(server.url + "/")
    assert page.locator("h1").inner_text() == "Run overview"
    assert page.locator("svg.chart").count() >= 4  # density histograms and scaling plots, no network
    page.locator("a.dict-link", has_text="tm2023-64").click()
    page.wait_for_url(re.compile(r"/dict/\d+$"))
    page.locator("a.feature-link").first.click()
    page.wait_for_url(re.compile(r"/dict/\d+/feature/0$"))
    assert shaded(page) > 10
    tok = page.locator("#top .tok.max").first
    assert re.fullmatch(r"act \d+\.\d{3}.*", tok.get_attribute("title"))
    underlined = page.eval_on_selector_all(
        "#top .tok", "els => els.filter(e => e.style.borderBottomStyle === 'solid').length"
    )
    assert underlined > 0  # ablation effects on the following tokens
    body = page.locator("main").inner_text()
    assert "<script>alert(1)</script>" in body and "<img src=x onerror=alert(1)>" in body  # shown as text
    assert "⟨U+202E⟩" in body or "⟨U+200B⟩" in body  # invisible characters made visible
    assert page.locator("main img").count() == 0
    page.locator("a.match").first.click()  # best match: a neuron or model B
    page.wait_for_url(re.compile(r"/dict/\d+/feature/\d+$"))
    assert shaded(page) > 0


def test_search(page, server):
    page.goto(server.url + "/dict/2")
    page.fill("#search", "arabic")
    page.press("#search", "Enter")
    page.wait_for_url(re.compile(r"q=arabic"))
    rows = page.locator("#features tbody tr")
    assert rows.count() > 0
    assert all("Arabic" in t for t in rows.all_inner_texts())


def test_text_view_runs_model_and_sae(page, server):
    page.goto(server.url + "/text")
    page.fill("#text-input", "the whale sees the rope. x_1 = 42 + 7 <script>alert(1)</script>")
    page.click("#run-text")
    page.wait_for_selector(".textview .tok")
    assert shaded(page) > 0
    page.locator(".textview .tok").nth(1).hover()
    link = page.locator("#active-list a").first
    link.wait_for()
    href = link.get_attribute("href")
    assert re.fullmatch(r"/dict/\d+/feature/\d+", href)
    link.click()
    page.wait_for_url(re.compile(r"/dict/\d+/feature/\d+$"))


ISOLATED = """() => {  // a point with no other point within 10 px, so a click on it is unambiguous
  const m = window.monosemanticMap;
  for (let i = 0; i < m.count; i++) {
    const [x, y] = m.project(i);
    let alone = true;
    for (let j = 0; j < m.count && alone; j++) {
      const [u, v] = m.project(j);
      if (j !== i && (u - x) ** 2 + (v - y) ** 2 < 100) alone = false;
    }
    if (alone) return [x, y, m.feature(i)];
  }
  return null;
}"""


def click_isolated_point(page) -> int:
    page.wait_for_function("window.monosemanticMap && window.monosemanticMap.count > 0")
    x, y, f = page.evaluate(ISOLATED)
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)
    return f


def test_map_click_opens_the_feature(page, server):
    page.goto(server.url + "/dict/2/map")
    page.select_option("#colour", "cluster")
    f = click_isolated_point(page)
    page.wait_for_url(re.compile(rf"/dict/2/feature/{f}$"))
    assert page.locator("h1").inner_text().endswith(f"#{f}")


def test_static_export_opens_from_disk(page, feature_db, tmp_path):
    out = tmp_path / "site"
    export_html(feature_db, out, progress=False)
    page.goto((out / "index.html").as_uri())
    page.locator("a.dict-link", has_text="tm2023-64").click()
    page.locator("a.feature-link").nth(2).click()
    page.wait_for_url(re.compile(r"feature-\d+-2\.html$"))
    assert shaded(page) > 10
    body = page.locator("main").inner_text()
    assert "<script>alert(1)</script>" in body or "<img src=x onerror=alert(1)>" in body
    page.goto((out / "map-2.html").as_uri())
    f = click_isolated_point(page)  # map.js runs from disk
    page.wait_for_url(re.compile(rf"feature-2-{f}\.html$"))
