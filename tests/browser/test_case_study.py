"""The case studies in the browser: the overview's table and a case-study feature's section, HTML and JSON."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from monosemantic.browser.app import create_app
from monosemantic.browser.synthetic import PROXIES
from tests.browser.conftest import LOCAL


@pytest.fixture(scope="module")
def client(feature_db):
    return TestClient(create_app(feature_db), base_url=LOCAL, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def overview(client):
    return client.get("/api/").json()


def test_overview_table_has_every_proxy_with_shares_features_neurons_decoder_family(client, overview):
    cs = overview["case_study"]
    assert cs["largest"] == "tm2023-128" and cs["sample"]["n_tokens"] == 1_048_576
    assert [r["name"] for r in cs["rows"]] == list(PROXIES)
    arabic = cs["rows"][0]
    assert arabic["share"]["sample"] == pytest.approx(0.002) and arabic["share"]["split"] == pytest.approx(0.0021)
    assert [x["n_features"] for x in arabic["by_dictionary"]] == [64, 128]
    assert len(arabic["decoder"]["top"]) == 3 and len(arabic["family"]["members"]) == 3
    assert arabic["specificity"] is not None and arabic["neuron_specificity"] is not None
    assert {r["name"] for r in cs["without_synthetic"]} == set(PROXIES)
    html = client.get("/").text
    assert 'class="case-study"' in html
    assert f'href="/dict/{arabic["dictionary_id"]}/feature/{arabic["feature"]}"' in html
    assert f'href="/dict/{cs["neurons_dictionary_id"]}/feature/{arabic["neuron"]}"' in html
    assert "<script>alert('summary')" not in html  # the summary is no longer dumped as it is


def test_case_study_feature_page_shows_levels_decoder_and_family(client, overview):
    cs = overview["case_study"]
    arabic = cs["rows"][0]
    d, f = arabic["dictionary_id"], arabic["feature"]
    cases = client.get(f"/api/dict/{d}/feature/{f}").json()["feature"]["case_studies"]
    assert [c["name"] for c in cases] == ["arabic"] and cases[0]["role"] == "feature"
    c = cases[0]
    for lv in (c["levels"], c["neuron_levels"]):
        assert len(lv["bars"]) == 10 and lv["bars"][0]["hi"] == pytest.approx(lv["max"])  # highest first
        assert all(b["share"] == pytest.approx(b["proxy_tokens"] / b["tokens"]) for b in lv["bars"])
    assert c["decoder"]["n_ge"] == arabic["decoder"]["n_ge"]
    assert [m["feature"] for m in c["family"]["members"]] == [m[0] for m in arabic["family"]["members"]]
    html = client.get(f"/dict/{d}/feature/{f}").text
    assert 'id="case-arabic"' in html and html.count('class="levels"') == 2
    for m in c["family"]["members"]:
        assert f'href="/dict/{d}/feature/{m["feature"]}"' in html
    for i, _ in c["decoder"]["top"]:
        assert f'href="/dict/{cs["neurons_dictionary_id"]}/feature/{i}"' in html
    # The best neuron's page shows its own levels.
    nd, n = cs["neurons_dictionary_id"], arabic["neuron"]
    neuron_cases = client.get(f"/api/dict/{nd}/feature/{n}").json()["feature"]["case_studies"]
    assert [x["role"] for x in neuron_cases] == ["neuron"] and neuron_cases[0]["neuron_levels"]["bars"]
    assert 'id="case-arabic"' in client.get(f"/dict/{nd}/feature/{n}").text
    # A feature that is no proxy's best has no case-study section.
    other = next(x for x in range(64) if x not in {r["feature"] for r in cs["rows"]})
    assert client.get(f"/api/dict/{d}/feature/{other}").json()["feature"]["case_studies"] == []
