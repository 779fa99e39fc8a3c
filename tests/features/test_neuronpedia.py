"""`features export --format neuronpedia` against the records Neuronpedia's converter writes, field by field.

SCHEMA below is the record classes of Neuronpedia's own export tooling (repository hijohnnylin/neuronpedia,
utils/neuronpedia-utils/neuronpedia_utils/db_models/*.py, which convert-saedashboard-to-neuronpedia-export.py
fills and writes one JSON object per line; batch-autointerp.py writes explanations without `embedding`
when it computes none), transcribed as field -> type. Types: str, int, float (an int is a float in
JSON), bool, time (an ISO 8601 string), [T] a list of T, T? T or null.
"""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from monosemantic.cli import main
from monosemantic.features import db, neuronpedia
from monosemantic.features.neuronpedia import NeuronpediaConfig, export_neuronpedia
from monosemantic.paths import RunLayout

SCHEMA = {
    "release": {  # db_models/source_release.py: SourceRelease
        "name": "str", "description": "str", "creatorName": "str", "creatorId": "str", "visibility": "str",
        "isNewUi": "bool", "featured": "bool", "descriptionShort": "str?", "urls": "[str]", "creatorEmail": "str?",
        "creatorNameShort": "str?", "defaultSourceSetName": "str?", "defaultSourceId": "str?",
        "defaultUmapSourceIds": "[str]", "createdAt": "time",
    },
    "model": {  # db_models/model.py: Model
        "id": "str", "instruct": "bool", "creatorId": "str", "displayNameShort": "str", "displayName": "str",
        "tlensId": "str?", "dimension": "int?", "visibility": "str", "defaultSourceSetName": "str?",
        "defaultSourceId": "str?", "inferenceEnabled": "bool", "layers": "int", "neuronsPerLayer": "int",
        "createdAt": "time", "owner": "str", "updatedAt": "time", "website": "str?",
    },
    "sourceset": {  # db_models/source_set.py: SourceSet
        "modelId": "str", "name": "str", "creatorId": "str", "hasDashboards": "bool", "visibility": "str",
        "description": "str", "type": "str", "creatorName": "str", "urls": "[str]", "creatorEmail": "str?",
        "releaseName": "str?", "defaultOfModelId": "str?", "defaultRange": "int", "defaultShowBreaks": "bool",
        "showDfa": "bool", "showCorrelated": "bool", "showHeadAttribution": "bool", "showUmap": "bool",
        "createdAt": "time",
    },
    "source": {  # db_models/source.py: Source
        "id": "str", "modelId": "str", "setName": "str", "creatorId": "str", "hasDashboards": "bool",
        "inferenceEnabled": "bool", "inferenceHosts": "[str]", "saelensConfig": "str?", "saelensRelease": "str?",
        "saelensSaeId": "str?", "hfRepoId": "str?", "hfFolderId": "str?", "visibility": "str",
        "defaultOfModelId": "str?", "hasUmap": "bool", "hasUmapLogSparsity": "bool", "hasUmapClusters": "bool",
        "num_prompts": "int?", "num_tokens_in_prompt": "int?", "dataset": "str?", "notes": "str?", "createdAt": "time",
    },
    "feature": {  # db_models/feature.py: Feature (Neuronpedia's Neuron table)
        "modelId": "str", "layer": "str", "index": "str", "creatorId": "str?", "createdAt": "time",
        "maxActApprox": "float?", "hasVector": "bool", "vector": "[float]", "vectorLabel": "str?",
        "vectorDefaultSteerStrength": "float?", "hookName": "str?", "topkCosSimIndices": "[int]",
        "topkCosSimValues": "[float]", "neuron_alignment_indices": "[int]", "neuron_alignment_values": "[float]",
        "neuron_alignment_l1": "[float]", "correlated_neurons_indices": "[int]",
        "correlated_neurons_pearson": "[float]", "correlated_neurons_l1": "[float]",
        "correlated_features_indices": "[int]", "correlated_features_pearson": "[float]",
        "correlated_features_l1": "[float]", "neg_str": "[str]",
        "neg_values": "[float]", "pos_str": "[str]", "pos_values": "[float]", "frac_nonzero": "float",
        "freq_hist_data_bar_heights": "[float]", "freq_hist_data_bar_values": "[float]",
        "logits_hist_data_bar_heights": "[float]", "logits_hist_data_bar_values": "[float]",
        "decoder_weights_dist": "[float]", "sourceSetName": "str?",
    },
    "activation": {  # db_models/activation.py: Activation
        "id": "str", "tokens": "[str]", "index": "str", "layer": "str", "modelId": "str", "maxValue": "float",
        "maxValueTokenIndex": "int", "minValue": "float", "values": "[float]", "creatorId": "str",
        "dataSource": "str?", "dataIndex": "str?", "dfaValues": "[float]", "dfaTargetIndex": "int?",
        "dfaMaxValue": "float?", "createdAt": "time", "lossValues": "[float]", "logitContributions": "str?",
        "binMin": "float?", "binMax": "float?", "binContains": "float?", "qualifyingTokenIndex": "int?",
        "zIndices": "[[int]]?", "zValues": "[float]?",
    },
    "explanation": {  # db_models/explanation.py: Explanation, without `embedding` (batch-autointerp.py)
        "id": "str", "modelId": "str", "layer": "str", "index": "str", "description": "str", "authorId": "str",
        "triggeredById": "str?", "typeName": "str?", "explanationModelName": "str?", "notes": "str?",
        "createdAt": "time",
    },
}  # fmt: skip


def conforms(value, typ: str) -> bool:
    if typ.endswith("?"):
        return value is None or conforms(value, typ[:-1])
    if typ.startswith("["):
        return isinstance(value, list) and all(conforms(v, typ[1:-1]) for v in value)
    if typ == "time":
        return isinstance(value, str) and datetime.fromisoformat(value) is not None
    if typ == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return type(value) is {"str": str, "int": int, "bool": bool}[typ]


def check(record: dict, kind: str) -> None:
    schema = SCHEMA[kind]
    assert set(record) == set(schema), (kind, set(record) ^ set(schema))
    for name, typ in schema.items():
        assert conforms(record[name], typ), (kind, name, record[name])


def jsonl(path: Path) -> list[dict]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture(scope="module")
def built(tiny_run, tmp_path_factory):
    """A copy of the tiny run with a feature database that has explanations."""
    run = tmp_path_factory.mktemp("np") / "run"
    shutil.copytree(tiny_run, run)
    fb = ["features", "build", "--run", str(run), "--n-tokens", "4096", "--analyses", "explain", "--no-progress"]
    assert main(fb) == 0
    conn = db.open_readonly(run / "features" / "features.sqlite")
    yield run, conn
    conn.close()


def test_every_record_follows_the_converters_schema_and_the_database(built, tmp_path, monkeypatch) -> None:
    run, conn = built
    monkeypatch.setattr(neuronpedia, "FEATURES_PER_BATCH", 50)  # several batches from 64 and 128 features
    cfg = NeuronpediaConfig(release="tiny", hf_repo_id="me/tiny-saes", creator_id="user1", url="https://x.org")
    folders = export_neuronpedia(RunLayout(run), tmp_path / "np", cfg)
    assert [f.relative_to(tmp_path / "np").as_posix() for f in folders] == ["run-a/0-tm2023-64", "run-a/0-tm2023-128"]
    n_tokens = db.get_meta(conn, "features")["n_tokens"]
    for folder in folders:
        name = folder.name.removeprefix("0-")
        did = db.dictionary_id(conn, name)
        for kind in ("release", "model", "sourceset", "source"):
            [record] = jsonl(folder / f"{kind}.jsonl")
            check(record, kind)
            assert record.get("creatorId", "user1") == "user1"
        [source] = jsonl(folder / "source.jsonl")
        assert (source["id"], source["modelId"], source["setName"]) == (folder.name, "run-a", name)
        assert (source["num_tokens_in_prompt"], source["num_prompts"]) == (64, n_tokens // 64)
        assert (source["dataset"], source["hfRepoId"], source["hfFolderId"]) == ("corpus.jsonl", "me/tiny-saes", name)
        [release] = jsonl(folder / "release.jsonl")
        assert (release["name"], release["urls"]) == ("tiny", ["https://x.org"])
        [sourceset] = jsonl(folder / "sourceset.jsonl")
        assert (sourceset["name"], sourceset["releaseName"], sourceset["modelId"]) == (name, "tiny", "run-a")

        rows = {r["feature"]: dict(r) for r in conn.execute("SELECT * FROM features WHERE dictionary_id=?", (did,))}
        n = len(rows)
        batches = sorted((folder / "features").iterdir())
        assert [b.name for b in batches] == [f"batch-{i}.jsonl.gz" for i in range((n + 49) // 50)]
        ids: list[str] = []
        seen = 0
        for i, batch in enumerate(batches):
            feats = jsonl(batch)
            acts = jsonl(folder / "activations" / batch.name)
            expls = jsonl(folder / "explanations" / batch.name)
            indices = [int(f["index"]) for f in feats]
            assert indices == list(range(50 * i, min(50 * i + 50, n)))  # activations batch i: batch i's features
            assert {a["index"] for a in acts} <= {f["index"] for f in feats}
            assert {e["index"] for e in expls} <= {f["index"] for f in feats}
            seen += len(feats)
            for f in feats:
                check(f, "feature")
                _feature_matches(conn, did, rows[int(f["index"])], f, [a for a in acts if a["index"] == f["index"]])
            for a in acts:
                check(a, "activation")
                assert (a["modelId"], a["layer"], a["creatorId"]) == ("run-a", folder.name, "user1")
            for e in expls:
                check(e, "explanation")
                assert e["description"] == rows[int(e["index"])]["explanation"] and e["authorId"] == "user1"
            ids += [a["id"] for a in acts] + [e["id"] for e in expls]
        assert len(ids) == len(set(ids)) and all(len(x) == 25 and x.startswith("c") for x in ids)
        assert seen == n
        n_expl = sum(r["explanation"] is not None for r in rows.values())
        assert n_expl > 0 and sum(len(jsonl(p)) for p in (folder / "explanations").iterdir()) == n_expl


def _feature_matches(conn, did: int, row: dict, f: dict, acts: list[dict]) -> None:
    """The Feature and its Activations say what the database says (module docstring of neuronpedia.py)."""
    assert f["frac_nonzero"] == row["density"] and f["sourceSetName"] and f["layer"].startswith("0-")
    logit = json.loads(row["logit_json"])
    assert list(zip(f["pos_str"], f["pos_values"], strict=True)) == [tuple(x) for x in logit["top"]]
    assert list(zip(f["neg_str"], f["neg_values"], strict=True)) == [tuple(x) for x in logit["bottom"]]
    if row["n_active"]:
        hist = json.loads(row["hist_json"])
        assert sum(f["freq_hist_data_bar_heights"]) == row["n_active"] == sum(hist["counts"])
        centres = f["freq_hist_data_bar_values"]
        assert all(a < c < b for a, c, b in zip(hist["edges"], centres, hist["edges"][1:], strict=False))
    examples = conn.execute(  # the export's order: top by rank, then the intervals from the highest
        "SELECT * FROM examples WHERE dictionary_id=? AND feature=? AND kind IN ('top','interval')"
        " ORDER BY kind = 'interval', interval DESC, rank",
        (did, row["feature"]),
    ).fetchall()
    assert len(acts) == len(examples)
    assert f["maxActApprox"] == max((a["maxValue"] for a in acts), default=0)
    bins = {r["interval"]: r for r in conn.execute(
        "SELECT * FROM intervals WHERE dictionary_id=? AND feature=?", (did, row["feature"]))}  # fmt: skip
    for a, e in zip(acts, examples, strict=True):
        assert a["tokens"] == json.loads(e["tokens_json"]) and a["qualifyingTokenIndex"] == e["max_index"]
        assert a["values"] == pytest.approx(json.loads(e["acts_json"]))
        assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"] == max(a["values"])  # the window's max
        at = a["values"][a["qualifyingTokenIndex"]]  # the example's own token
        assert at == pytest.approx(e["max_act"], abs=1e-4)
        if e["kind"] == "top":
            assert (a["binMin"], a["binMax"], a["binContains"]) == (-1, row["max_act"], -1)
        else:
            b = bins[e["interval"]]
            assert (a["binMin"], a["binMax"]) == (b["lo"], b["hi"]) and b["lo"] - 1e-4 < at <= b["hi"] + 1e-4
            assert a["binContains"] == pytest.approx(b["count"] / row["n_active"])


def test_the_cli_writes_the_same_records_again_and_names_bad_input(built, tmp_path, capsys) -> None:
    run, _ = built
    out = tmp_path / "np"
    assert main(["features", "export", str(run), str(out), "--np-dictionaries", "tm2023-64"]) == 0
    again = tmp_path / "again"
    fmt = ["--format", "neuronpedia"]
    assert main(["features", "export", str(run), str(again), *fmt, "--np-dictionaries", "tm2023-64"]) == 0
    a, b = out / "run-a" / "0-tm2023-64", again / "run-a" / "0-tm2023-64"
    assert sorted(p.name for p in a.iterdir()) == sorted(
        ["release.jsonl", "model.jsonl", "sourceset.jsonl", "source.jsonl", "features", "activations", "explanations"]
    )
    strip = lambda rs: [{k: v for k, v in r.items() if k != "createdAt"} for r in rs]  # noqa: E731
    for part in ("features/batch-0.jsonl.gz", "activations/batch-0.jsonl.gz", "explanations/batch-0.jsonl.gz"):
        assert strip(jsonl(a / part)) == strip(jsonl(b / part))  # the same ids: derived from the content
    assert main(["features", "export", str(run), str(out)]) == 2
    assert "exists; use --force" in capsys.readouterr().err
    assert main(["features", "export", str(run), str(tmp_path / "x"), "--np-dictionaries", "tm2023-9"]) == 2
    assert "no SAE dictionary tm2023-9" in capsys.readouterr().err
    assert main(["features", "export", str(tmp_path), str(tmp_path / "y")]) == 2
    assert "no feature database here" in capsys.readouterr().err and not (tmp_path / "y").exists()
