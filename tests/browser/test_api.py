"""In-process tests of the JSON twins and the HTML pages on the synthetic feature database."""

from __future__ import annotations

import re
import sqlite3
from html.parser import HTMLParser

import pytest
from starlette.testclient import TestClient

from monosemantic.browser.app import TextLimits, create_app
from monosemantic.browser.export import export_html
from monosemantic.browser.queries import fts_query
from monosemantic.browser.synthetic import HOSTILE
from monosemantic.errors import UserError
from tests.browser.conftest import LOCAL


@pytest.fixture(scope="module")
def client(feature_db):
    return TestClient(create_app(feature_db, TextLimits(max_chars=50)), base_url=LOCAL, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def dicts(client):
    return {(d["model"], d["name"]): d["id"] for d in client.get("/api/").json()["dictionaries"]}


def test_overview_json_has_dictionaries_metrics_and_tables(client, dicts):
    o = client.get("/api/").json()
    assert set(dicts) == {("A", "neurons"), ("A", "tm2023-64"), ("A", "tm2023-128"), ("B", "tm2023-128")}
    sae = next(d for d in o["dictionaries"] if d["name"] == "tm2023-64")
    assert sae["metrics"]["l0"] > 0 and sum(sae["density_hist"]["counts"]) + sae["density_hist"]["dead"] == 64
    assert [n for n, _ in o["scaling"]["l0"]["A tm2023"]] == [64, 128]
    assert {p["name"] for p in o["proxies"]} >= {"arabic", "dna"}
    assert set(o["summary"]) == {"eval", "case_study", "universality", "interpretability", "interpretability_classes"}
    html = client.get("/").text  # the class pair's scores beside the token pair's
    classes = html[html.index("<h2>Interpretability, explanations that name classes of tokens</h2>") :]
    assert "256 classes of tokens, at most 4 named" in classes and "0.31" in classes


def test_list_sorts_filters_and_pages(client, dicts):
    d = dicts["A", "tm2023-128"]
    r = client.get(f"/api/dict/{d}", params={"sort": "density", "desc": "1"}).json()
    dens = [f["density"] for f in r["features"]]
    assert r["total"] == 128 and len(dens) == 100 and dens == sorted(dens, reverse=True)
    assert len(client.get(f"/api/dict/{d}", params={"page": 2}).json()["features"]) == 28
    r = client.get(f"/api/dict/{d}", params={"min_density": "0.01", "sort": "max_act"}).json()
    assert r["total"] > 0 and all(f["density"] >= 0.01 for f in r["features"])
    assert [f["max_act"] for f in r["features"]] == sorted(f["max_act"] for f in r["features"])
    scored = client.get(f"/api/dict/{d}", params={"sort": "score", "desc": "1"}).json()["features"]
    assert scored[0]["score"] == max(f["score"] for f in scored if f["score"] is not None)
    r = client.get(f"/api/dict/{d}", params={"source": "code/python", "min_share": "0.6"}).json()
    assert 0 < r["total"] < 128
    r = client.get(f"/api/dict/{d}", params={"min_act": "6", "min_score": "0.5"}).json()
    assert 0 < r["total"] < 128 and all(f["max_act"] >= 6 and f["score"] >= 0.5 for f in r["features"])
    html = client.get(f"/dict/{d}", params={"min_score": "0.5", "page": "1"}).text
    assert 'name="min_score" size="5" value="0.5"' in html


def test_search_finds_explanations_and_top_tokens(client, dicts):
    d = dicts["A", "tm2023-64"]
    r = client.get(f"/api/dict/{d}", params={"q": "arabic"}).json()
    assert r["total"] > 0 and all("Arabic" in f["explanation"] for f in r["features"])
    r = client.get(f"/api/dict/{d}", params={"q": "whal"}).json()  # prefix match in top_tokens too
    assert r["total"] > 0
    assert all("whal" in (f["explanation"] + f["top_tokens"]).lower() for f in r["features"])


@pytest.mark.parametrize("q", ['"', "AND", "a OR", "*", "x:y", "'; DROP TABLE features; --", "NEAR(", "(("])
def test_search_syntax_in_input_is_text(client, dicts, q):
    r = client.get(f"/api/dict/{dicts['A', 'tm2023-64']}", params={"q": q})
    assert r.status_code == 200 and isinstance(r.json()["total"], int)
    assert fts_query(q).count('"') % 2 == 0


def test_feature_json_has_every_part_of_the_page(client, dicts):
    d = dicts["A", "tm2023-64"]
    f = client.get(f"/api/dict/{d}/feature/1").json()["feature"]
    assert f["feature"] == 1 and 0 < f["density"] <= 1
    assert len(f["top"]) == 8 and all(len(e["tokens"]) == len(e["acts"]) == len(e["ablation"]) for e in f["top"])
    assert [e["max_act"] for e in f["top"]] == sorted((e["max_act"] for e in f["top"]), reverse=True)
    assert len(f["intervals"]) == 4 and all(len(i["examples"]) == 2 for i in f["intervals"])
    assert f["ablation"]["promoted"] and f["pinned"] and f["logit"]["top"] and f["hist"]["counts"]
    kinds = {(m["model"], m["kind"]) for m in f["matches"]}
    assert kinds == {("A", "neurons"), ("B", "sae")}
    assert f["children"] and {c["name"] for c in f["children"]} == {"tm2023-128"}
    child = client.get(f"/api/dict/{dicts['A', 'tm2023-128']}/feature/65").json()["feature"]
    assert [(p["name"], p["feature"]) for p in child["parents"]] == [("tm2023-64", 1)]


def test_neuron_page_uses_the_same_view(client, dicts):
    r = client.get(f"/dict/{dicts['A', 'neurons']}/feature/3")
    assert r.status_code == 200 and "Neuron A/neurons #3" in r.text and 'class="tok' in r.text


@pytest.mark.parametrize(
    "url,status",
    [("/dict/999/feature/1", 404), ("/dict/2/feature/100000", 404), ("/dict/abc", 400), ("/dict/2/feature/x", 400),
     ("/dict/2?sort=evil", 400), ("/dict/2?page=0", 400), ("/dict/2?min_density=nan", 400),
     ("/dict/2?source=nope", 400), ("/dict/2/feature/99999999999999999999999", 404), ("/nope", 404),
     ("/dict/2?q=" + "x" * 300, 400)],
)  # fmt: skip
def test_bad_requests_are_error_pages_without_tracebacks(client, url, status):
    for prefix in ("", "/api"):
        r = client.get(prefix + url)
        assert r.status_code == status, prefix + url
        assert "Traceback" not in r.text and 'File "' not in r.text
        if prefix:
            assert r.json()["status"] == status


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, list]] = []

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, attrs))


def test_hostile_corpus_text_is_escaped_everywhere(client, dicts):
    pages = ["/", f"/dict/{dicts['A', 'tm2023-64']}", f"/dict/{dicts['A', 'tm2023-64']}/map"]
    pages += [f"/dict/{d}/feature/{f}" for d in dicts.values() for f in range(8)]
    seen = 0
    for url in pages:
        html = client.get(url).text
        tags = Tags()
        tags.feed(html)
        assert "img" not in {t for t, _ in tags.seen}, url
        assert not [a for _, attrs in tags.seen for a, _ in attrs if a.startswith("on")], url
        for t, attrs in tags.seen:
            a = dict(attrs)
            if t == "script":
                assert a.get("src", "").startswith("/static/") or a.get("type") == "application/json", url
            assert not (a.get("href") or "").lower().startswith("javascript:"), url
        assert "\u202e" not in html  # shown as a visible ⟨U+202E⟩ mark instead
        seen += html.count("&lt;script&gt;alert(1)&lt;/script&gt;") + html.count("\\u003cscript\\u003e")
    assert seen > 0  # the hostile strings were there, escaped


def test_overview_universality_table_has_medians_per_density_band(client):
    html = client.get("/").text
    table = html[html.index('<table class="universality">') :]
    table = table[: table.index("</table>")]
    for header in ("density ≤ 0.0001", "density 0.0001–0.001", "density &gt; 0.001", "paper"):
        assert header in table
    assert "0.72" in table and "0.46" in table  # the paper's feature and neuron medians beside ours
    # synthetic.py's tm2023 best matches 0.1, 0.2, 0.8, 0.7, 0.9, dealt round-robin into the three bands
    assert "<td>0.7</td>" in table and "0.4 (2)" in table and "0.55 (2)" in table and "0.8 (1)" in table


def test_security_headers_and_text_limit(client):
    r = client.get("/")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert re.match(r"app;dur=[\d.]+", r.headers["server-timing"])
    r = client.get("/api/text", params={"text": "x" * 51})
    assert r.status_code == 400 and "50 characters" in r.json()["error"]
    assert (
        client.post("/api/text", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    )


def test_database_is_opened_read_only(client, feature_db):
    conn = client.app.state.browser.conn()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM features")


def test_export_html_writes_every_page_with_relative_links(feature_db, tmp_path):
    out = tmp_path / "site"
    n = export_html(feature_db, out, progress=False)
    assert n == 1 + 4 + (1 + 1 + 2 + 2) + (32 + 64 + 128 + 128)  # overview, maps, list pages of 100, features
    assert (out / "static" / "map.js").is_file() and (out / "feature-2-0.html").is_file()
    html = (out / "feature-2-0.html").read_text()
    assert 'href="dict-2.html"' in html and 'href="/' not in html and "http://" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and HOSTILE[0] not in html
    with pytest.raises(UserError, match="exists; use --force"):
        export_html(feature_db, out, progress=False)
