"""Input limits: `**` globs never enter symlinked folders, JSONL is read a line at a time under a stated cap,
model names stay inside the run folder, and Hugging Face weights load from safetensors only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from monosemantic.cli import main
from monosemantic.errors import UserError

SRC = str(Path(__file__).parents[1] / "src")


def test_a_recursive_glob_through_self_linking_folders_finishes(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("top level text\n" * 10)
    (data / "sub" / "b.txt").write_text("nested text\n" * 10)
    (data / "sub" / "loop").symlink_to(data, target_is_directory=True)  # two self-links
    (data / "self").symlink_to(".", target_is_directory=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "c.txt").write_text("outside the tree\n" * 10)
    (data / "out").symlink_to(elsewhere, target_is_directory=True)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "monosemantic", "corpus", "build", "--run", str(run), f"{data}/**/*.txt"]
    proc = subprocess.run(cmd + ["--no-progress"], env={**os.environ, "PYTHONPATH": SRC}, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    corpus = [json.loads(line)["text"] for line in (run / "corpus" / "corpus.jsonl").read_text().splitlines()]
    assert sorted(t.splitlines()[0] for t in corpus) == ["nested text", "top level text"]  # each file once


def test_glob_matches_as_glob_does_without_links(tmp_path, monkeypatch):
    from monosemantic.data.inputs import _glob

    for rel in ("a.txt", "x/b.txt", "x/y/c.txt", "x/.hidden/d.txt", ".e.txt", "x/f.jsonl"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("t")
    monkeypatch.chdir(tmp_path)
    import glob

    for spec in ("**/*.txt", "x/**/*.txt", "**", "x/**", "**/*", "*/*.txt", "x/**/c.txt", "**/.e.txt"):
        assert _glob(spec) == sorted(glob.glob(spec, recursive=True)), spec


def read_jsonl(path: Path) -> list[tuple[str, str]]:
    from monosemantic.data.corpus import CorpusConfig, _read_jsonl
    from monosemantic.data.inputs import resolve

    return [doc for inp in resolve([str(path)]) for doc in _read_jsonl(inp, CorpusConfig())]


def test_one_jsonl_line_of_a_million_lines_is_read_in_bounded_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"text": "ab\n" * 1_000_000}) + "\n")  # 4 MB on one line
    size = path.stat().st_size
    tracemalloc.start()
    try:
        n_chars = sum(len(t) for _, t in read_jsonl(path))  # streamed: chunks are not kept
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n_chars == 3_000_000
    # the line, its text and one chunk at a time; a list of the million lines alone took 15 times the file
    assert peak < 6 * size, (peak, size)


def test_a_jsonl_line_over_the_cap_is_a_one_line_error(tmp_path, monkeypatch):
    from monosemantic.data import corpus

    monkeypatch.setattr(corpus, "MAX_JSONL_LINE", 1000)
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"text": "short"}) + "\n" + json.dumps({"text": "x" * 5000}) + "\n")
    with pytest.raises(UserError, match=r"long\.jsonl:2: line longer than 0 MiB, the cap on one JSONL line"):
        read_jsonl(path)


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "/abs", ".hidden", ""])
def test_run_paths_refuse_names_that_leave_the_run(tmp_path, name):
    from monosemantic.paths import RunLayout

    layout = RunLayout(tmp_path / "run")
    for make in (layout.transformer, lambda n: layout.activations(n, "h"), lambda n: layout.saes("A", n)):
        with pytest.raises(UserError, match="names stay inside the run folder"):
            make(name)
    assert layout.transformer("A-shuffled").parent == tmp_path / "run" / "transformer"
    assert layout.eval("hf-gpt2", "transformer.h.1.mlp.c_proj-input").is_relative_to(tmp_path / "run")


def test_model_names_from_the_command_line_stay_inside_the_run(tiny_run, tmp_path, capsys):
    run = tmp_path / "runs" / "run"
    shutil.copytree(tiny_run / "transformer", run / "transformer")
    for args in (
        ["lm", "shuffle", "--run", run, "--out", "../../escaped"],
        ["lm", "shuffle", "--run", run, "--model", "../A"],
        ["lm", "train", "--run", run, "--model", "../../escaped", "--preset", "tiny"],
    ):
        capsys.readouterr()
        assert main([str(a) for a in args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "names stay inside the run folder" in err, err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run"]
    assert not (tmp_path / "escaped").exists()


transformers = pytest.importorskip("transformers")


def tiny_gpt2(folder: Path, safe: bool) -> Path:
    """A 1-layer GPT-2 with a byte-level BPE tokenizer; `safe=False` keeps only a pickled pytorch_model.bin."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(["the whale sees the sea"] * 20, trainer=trainer)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=32, n_layer=1, n_embd=16, n_head=2)
    model = GPT2LMHeadModel(cfg)
    model.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    if not safe:  # what older tools wrote: the weights as a pickle
        for f in folder.glob("*.safetensors"):
            f.unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def test_a_hugging_face_folder_without_safetensors_is_refused(tmp_path):
    from monosemantic.transformer.hf import load_hf

    folder = tiny_gpt2(tmp_path / "pickled", safe=False)
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))
    with pytest.raises(UserError, match="no .safetensors weights; only safetensors are loaded") as e:
        load_hf(str(folder))
    assert "\n" not in str(e.value)


def test_hugging_face_weights_load_with_use_safetensors(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from monosemantic.transformer import hf

    folder = tiny_gpt2(tmp_path / "safe", safe=True)
    seen = {}
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    model, _ = hf.load_hf(str(folder))
    assert seen.get("use_safetensors") is True and model.vocab_size > 256
