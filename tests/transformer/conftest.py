"""A tiny random GPT-2 saved to disk with a locally trained tokenizer: the Hugging Face subject of the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monosemantic.cli import main
from tests.conftest import make_documents


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 (d 32, 128 MLP neurons), random weights, BPE tokenizer trained locally."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([t for _, t in make_documents(100)], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=128, n_layer=2, n_embd=32, n_head=2)
    folder = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2"
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def corpus_run(tmp_path: Path) -> Path:
    """A run directory holding only a corpus (a Hugging Face subject needs no other stage)."""
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"src": s, "text": t}) + "\n" for s, t in make_documents(300)))
    run = tmp_path / "run"
    assert main(["corpus", "build", str(src), "--run", str(run), "--no-progress"]) == 0
    return run
