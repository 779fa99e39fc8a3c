"""Hostile and broken input: every loader, fed damaged files, raises only a one-line UserError that
names the file, and writes nothing (property-based, hypothesis), plus CLI exit codes and a full disk.

Example counts are kept small (`FEW`) so the file runs in seconds beside the shared tiny run.
"""

from __future__ import annotations

import errno
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from monosemantic import paths
from monosemantic.cli import main
from monosemantic.errors import UserError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
HOOK = "blocks.0.mlp.hook_post"


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def only_user_error(fn: Callable[[], object], names: Path, root: Path) -> None:
    """`fn()` either succeeds or raises a one-line UserError naming `names`; nothing new under `root`."""
    before = listing(root)
    try:
        fn()
    except UserError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        assert str(names) in msg or names.name in msg, f"{msg!r} does not name {names}"
    assert listing(root) == before, "a loader wrote files"


def damage(path: Path, data: bytes, how: str) -> None:
    """Replace a file by `data`, truncate it to a fraction, or empty it."""
    if how == "replace":
        path.write_bytes(data)
    elif how == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(data) % max(1, len(raw))])
    else:
        path.write_bytes(b"")


HOW = st.sampled_from(["replace", "truncate", "empty"])
JUNK = st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def run_copy(tiny_run, tmp_path_factory) -> Path:
    """A private copy of the tiny run, read by the loaders (each example damages its own copy)."""
    dst = tmp_path_factory.mktemp("hostile") / "run"
    shutil.copytree(tiny_run, dst)
    return dst


def sae_folder(run: Path) -> Path:
    return run / "sae" / "A" / HOOK / "tm2023-64"


# -- every loader, every file ---------------------------------------------------------------


def loaders(run: Path) -> dict[str, tuple[Path, Callable[[Path], object]]]:
    """name -> (the folder or file handed to the loader, the loader)."""
    from monosemantic.activations.store import open_activations
    from monosemantic.data.corpus import iter_documents
    from monosemantic.data.tokenizer import load_tokenizer
    from monosemantic.data.tokens import TokenStore
    from monosemantic.sae.model import SparseAutoencoder
    from monosemantic.transformer.model import load_transformer

    return {
        "corpus": (run / "corpus", lambda p: list(iter_documents(p))),
        "tokenizer": (run / "tokenizer", lambda p: load_tokenizer(p / paths.TOKENIZER_JSON)),
        "tokens": (run / "tokens", lambda p: TokenStore(p).val.windows(65, 4096)),
        "transformer": (run / "transformer" / "A", load_transformer),
        "activations": (run / "activations" / "A" / HOOK, lambda p: list(open_activations(p).batches(4096))),
        "sae": (sae_folder(run), SparseAutoencoder.load),
    }


ARTIFACTS = ["corpus", "tokenizer", "tokens", "transformer", "activations", "sae"]


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_damaged_files_of_every_artifact_give_a_user_error_naming_the_file(artifact, run_copy):
    folder, load = loaders(run_copy)[artifact]
    files = sorted(p.name for p in folder.iterdir() if p.is_file())

    @FEW
    @given(name=st.sampled_from(files), data=JUNK, how=HOW)
    def check(name, data, how):
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / folder.name
            shutil.copytree(folder, copy)
            damage(copy / name, data, how)
            only_user_error(lambda: load(copy), copy, copy)  # the message names a file in the folder

    check()


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_missing_files_give_a_user_error(artifact, run_copy):
    folder, load = loaders(run_copy)[artifact]
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / folder.name
            shutil.copytree(folder, copy)
            (copy / f.name).unlink()
            only_user_error(lambda copy=copy: load(copy), copy, copy)


@pytest.mark.parametrize("config", ["activations", "sae", "tokens", "transformer"])
def test_any_json_in_a_config_gives_a_user_error(config, run_copy):
    folder, load = loaders(run_copy)[config]
    name = paths.SAE_CONFIG if config == "sae" else paths.CONFIG
    original = json.loads((folder / name).read_text())

    @FEW
    @given(key=st.sampled_from(sorted(original)), value=JSON, whole=st.booleans())
    def check(key, value, whole):
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / folder.name
            shutil.copytree(folder, copy)
            body = value if whole else {**original, key: value}
            (copy / name).write_text(json.dumps(body))
            only_user_error(lambda: load(copy), copy, copy)

    check()


# -- arrays: shapes, dtypes, NaN/inf ---------------------------------------------------------

DTYPES = st.sampled_from(["float16", "float32", "float64", "int32", "uint8", "bool", "complex64"])


@FEW
@given(
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=3),
    dtype=DTYPES,
    poison=st.sampled_from([None, np.nan, np.inf, -np.inf]),
    suffix=st.sampled_from([".npy", ".safetensors"]),
)
def test_any_array_is_read_or_refused_with_a_user_error(shape, dtype, poison, suffix):
    from safetensors.numpy import save_file

    from monosemantic.activations.store import open_activations

    a = np.ones(shape, dtype=dtype)
    if poison is not None and a.size and a.dtype.kind == "f":
        a.flat[a.size // 2] = poison
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"acts{suffix}"
        if suffix == ".npy":
            np.save(path, a)
        else:
            if a.dtype.kind in "c":
                return  # safetensors has no complex type
            save_file({"acts": a}, str(path))

        def read():
            src = open_activations(path)
            src.check_sample()
            return list(src.batches(4))

        only_user_error(read, path, Path(tmp))
        ok = a.ndim == 2 and a.size > 0 and a.dtype.kind == "f" and poison is None
        if ok:
            read()  # a well-formed float matrix is accepted


@FEW
@given(data=JUNK, suffix=st.sampled_from([".npy", ".safetensors", ".bin", ""]))
def test_junk_bytes_as_activations_or_tensors(data, suffix):
    from monosemantic.activations.store import open_activations
    from monosemantic.io import load_tensors, read_json

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(data)
        only_user_error(lambda: list(open_activations(path).batches(8)), path, Path(tmp))
        only_user_error(lambda: load_tensors(path), path, Path(tmp))
        only_user_error(lambda: read_json(path), path, Path(tmp))


@FEW
@given(lines=st.lists(JUNK, min_size=1, max_size=5))
def test_corpus_inputs_of_junk_bytes(lines):
    """User .jsonl and .txt inputs: malformed lines are errors; invalid UTF-8 in .txt is replaced."""
    from monosemantic.data.corpus import CorpusConfig, build_corpus

    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".jsonl", ".txt"):
            src = Path(tmp) / f"in{suffix}"
            src.write_bytes(b"\n".join(lines))
            out = Path(tmp) / f"out{suffix}"
            try:
                build_corpus([str(src)], out, CorpusConfig(), progress=False)
            except UserError as e:
                assert "\n" not in str(e) and ("in" + suffix in str(e) or "empty" in str(e) or "no documents" in str(e))
                assert not out.exists()


# -- the CLI: exit 2, one line, nothing overwritten -------------------------------------------


def one_line_error(capsys, *args: object) -> str:
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # earlier lines are the command's own log
    assert err.startswith("monosemantic: error: "), err
    return err


def test_cli_refuses_bad_activations_with_exit_2(tmp_path, capsys):
    bad = np.ones((64, 8), dtype=np.float32)
    bad[40, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    err = one_line_error(capsys, "sae", "train", "--activations", tmp_path / "nan.npy", "--out", tmp_path / "o")
    assert "nan.npy" in err and "NaN" in err and not (tmp_path / "o").exists()
    np.save(tmp_path / "ok.npy", np.ones((64, 8), dtype=np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:150])
    err = one_line_error(capsys, "sae", "train", "--activations", tmp_path / "cut.npy", "--out", tmp_path / "o")
    assert "cut.npy" in err
    np.save(tmp_path / "ints.npy", np.ones((64, 8), dtype=np.int32))
    assert "float" in one_line_error(
        capsys, "sae", "train", "--activations", tmp_path / "ints.npy", "--out", tmp_path / "o"
    )


def test_cli_sae_width_mismatch_and_corrupt_model(run_copy, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_copy, run, ignore=shutil.ignore_patterns("eval"))
    from monosemantic.sae.model import SAEConfig, SparseAutoencoder

    wrong = run / "sae" / "A" / HOOK / "tm2023-7"
    SparseAutoencoder(SAEConfig(d_in=7, n_features=16)).save(wrong)
    err = one_line_error(capsys, "sae", "eval", "--run", run, "--preset", "tiny", "--no-progress")
    assert str(wrong) in err and "7 dims" in err
    assert not (run / "eval").exists()
    shutil.rmtree(wrong)
    weights = run / "transformer" / "A" / paths.MODEL_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])
    err = one_line_error(capsys, "harvest", "--run", run, "--preset", "tiny", "--no-progress", "--force")
    assert str(weights) in err
    assert (run / "activations" / "A" / HOOK / paths.CONFIG).is_file()  # the earlier harvest is intact


def no_space(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_keeps_the_earlier_file_and_leaves_no_temp(tmp_path, monkeypatch):
    from monosemantic import io

    target = tmp_path / "a.json"
    io.write_json(target, {"v": 1})
    monkeypatch.setattr(io.json, "dumps", no_space)
    with pytest.raises(UserError, match=r"a\.json: write failed, No space left on device"):
        io.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert listing(tmp_path) == {"a.json"}


def test_full_disk_during_sae_train_keeps_the_earlier_sae(tmp_path, capsys, monkeypatch):
    from monosemantic import io

    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(512, 8)).astype(np.float32))
    args = ["sae", "train", "--activations", tmp_path / "acts.npy", "--out", tmp_path / "o", "--preset", "tiny"]
    args += ["--n-features", "16", "--no-progress"]
    assert main([str(a) for a in args]) == 0
    sae = tmp_path / "o" / "tm2023-16"
    before = {p: p.read_bytes() for p in sorted(sae.iterdir())}
    monkeypatch.setattr(io, "save_file", no_space)
    err = one_line_error(capsys, *args, "--force")
    assert "No space left on device" in err and "tm2023-16" in err
    assert {p: p.read_bytes() for p in sorted(sae.iterdir())} == before
    assert listing(tmp_path / "o") == {"tm2023-16", *(f"tm2023-16/{p.name}" for p in before)}


def test_a_diverging_sae_is_stopped_and_not_saved(tmp_path, capsys):
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(1024, 8)).astype(np.float32) * 1e30)
    args = ["sae", "train", "--activations", tmp_path / "acts.npy", "--out", tmp_path / "o", "--preset", "tiny"]
    err = one_line_error(capsys, *args, "--n-features", "16", "--no-progress", "--no-normalize-inputs", "--lr", "1e3")
    assert "diverged" in err or "NaN" in err
    assert not (tmp_path / "o" / "tm2023-16").exists()


@pytest.mark.parametrize("config", ["activations", "sae", "tokens", "transformer"])
def test_an_infinite_number_in_a_config_gives_a_user_error(config, run_copy):
    """JSON's `Infinity` parses to a float that int() cannot take (OverflowError, found by the fuzzing above)."""
    folder, load = loaders(run_copy)[config]
    name = paths.SAE_CONFIG if config == "sae" else paths.CONFIG
    original = json.loads((folder / name).read_text())
    for key in sorted(k for k, v in original.items() if isinstance(v, int) and not isinstance(v, bool)):
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / folder.name
            shutil.copytree(folder, copy)
            (copy / name).write_text(json.dumps({**original, key: float("inf")}))
            only_user_error(lambda copy=copy: load(copy), copy, copy)


def test_an_infinite_number_in_a_preset_list_gives_a_user_error(tmp_path, capsys):
    (tmp_path / "preset.json").write_text('{"sae": {"n_features": [1e400]}}')  # parses to inf
    np.save(tmp_path / "acts.npy", np.ones((64, 8), dtype=np.float32))
    err = one_line_error(
        capsys, "sae", "train", "--activations", tmp_path / "acts.npy", "--preset", tmp_path / "preset.json"
    )
    assert "n_features" in err and "expected a list of int" in err
