"""The browser's commands and the live text view's limits, in-process."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from monosemantic.browser.app import TextLimits, create_app
from monosemantic.cli import main
from monosemantic.cli.browser import serve_command
from monosemantic.features.textview import TextView
from tests.browser.conftest import LOCAL


def test_serve_without_a_database_is_a_one_line_error(tmp_path, capsys):
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "features.sqlite: no feature database here" in err and "\n" not in err


def test_export_html_command(feature_db, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["export-html", str(feature_db), str(out), "--no-progress"]) == 0
    assert (out / "index.html").is_file() and "pages in" in capsys.readouterr().out
    assert main(["export-html", str(feature_db), str(out), "--no-progress"]) == 2  # exists, no --force
    assert main(["export-html", str(feature_db), str(out), "--no-progress", "--force"]) == 0


def test_serve_command_line():
    assert serve_command("runs/default") == "monosemantic serve runs/default"


@pytest.fixture(scope="module")
def run_client(browser_run):
    return TestClient(create_app(browser_run, text_view=TextView), base_url=LOCAL, raise_server_exceptions=False)


def test_text_view_json_runs_the_run_s_model_and_sae(run_client):
    dicts = {(d["model"], d["name"]): d["id"] for d in run_client.get("/api/").json()["dictionaries"]}
    r = run_client.post("/api/text", json={"text": "the whale sees the rope", "d": dicts["A", "tm2023-64"]})
    assert r.status_code == 200
    res = r.json()["result"]
    assert "".join(res["tokens"]) == "the whale sees the rope"
    assert len(res["active"]) == len(res["tokens"]) and any(res["active"])
    f, act, explanation = res["active"][0][0]
    assert 0 <= f < 64 and act > 0 and isinstance(explanation, str)
    html = run_client.get("/text", params={"text": "<script>alert(1)</script>"}).text
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html


def test_text_view_time_limit_is_a_503(browser_run):
    client = TestClient(
        create_app(browser_run, TextLimits(timeout_s=0.0), text_view=TextView),
        base_url=LOCAL,
        raise_server_exceptions=False,
    )
    r = client.get("/api/text", params={"text": "the whale"})
    assert r.status_code == 503 and "longer than" in r.json()["error"]
