"""Any Hugging Face causal LM as the subject model: load it and make it look like ours.

    model, tok = load_hf("path/to/folder")                  # save_pretrained folder
    model, tok = load_hf("SmolLM2-135M-Instruct.Q4_1.gguf")  # a GGUF file (dequantized to float32)
    model, tok = load_hf("HuggingFaceTB/SmolLM2-135M")       # a hub name, from the local cache only
    model, tok = load_hf(folder, "cuda", dtype="bfloat16")   # bfloat16 weights on one GPU
    model, tok = load_hf(folder, device_map="auto")          # spread over every GPU (then CPU): accelerate
    logits = model(tokens)                                   # int64 [batch, pos] -> [batch, pos, vocab]
    model.find_module("transformer.h.1.mlp.c_proj")          # a module by its path in the HF model

`HFSubject` wraps an `AutoModelForCausalLM` so that the harvest and the splice, written for our
one-layer transformer, run on it unchanged: its forward takes token ids and returns logits, and
hooks are named by module path (`transformer/subject.py` parses `path[:input|:output]`).

Weights are read from safetensors only (`use_safetensors=True`): a folder holding only a pickled
`pytorch_model.bin`, which can run code when loaded, is refused with a one-line error. `transformers`
is imported lazily (the `hf` extra): nothing else in the package needs it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from monosemantic.errors import UserError
from monosemantic.runtime import SUBJECT_DTYPES

if TYPE_CHECKING:  # transformers stays a lazy import (the hf extra)
    from transformers import PreTrainedModel

DEFAULT_CTX_LEN = 256
"""Context length used for an HF model unless asked otherwise: our model's, and short enough that a
135M model harvests on a CPU (SmolLM2 allows 8,192)."""


class HFSubject(nn.Module):
    """A Hugging Face causal LM with our subject interface: `forward(tokens) -> logits`."""

    def __init__(self, hf: PreTrainedModel, ctx_len: int, source: str):
        super().__init__()
        self.hf, self.source = hf, source
        self.vocab_size = int(hf.config.vocab_size)
        self.ctx_len = ctx_len

    def forward(self, tokens: Tensor) -> Tensor:
        """int64 `[batch, pos]` -> logits `[batch, pos, vocab]`."""
        return self.hf(input_ids=tokens, use_cache=False).logits

    def find_module(self, path: str) -> nn.Module:
        """The submodule at `path` in the HF model (e.g. `model.layers.5.mlp.down_proj`)."""
        return self.hf.get_submodule(path)

    def module_paths(self) -> list[str]:
        return [name for name, _ in self.hf.named_modules() if name]


def _max_positions(config: Any) -> int | None:
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _where(spec: str) -> tuple[str, dict[str, Any]]:
    """(what `from_pretrained` gets, extra kwargs) for a folder, a .gguf file or a hub name."""
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"{path}: a model file must be .gguf (or give the folder holding config.json)")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if (path / "config.json").is_file():
            if not any(path.glob("*.safetensors")):
                raise UserError(
                    f"{path}: no .safetensors weights; only safetensors are loaded (a pickled .bin can run code): "
                    "save it with save_pretrained(folder, safe_serialization=True)"
                )
            return str(path), {"use_safetensors": True}
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(path), {"gguf_file": ggufs[0].name}
        raise UserError(f"{path}: no config.json (a save_pretrained folder) and not exactly one .gguf file")
    if spec.endswith(".gguf") or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UserError(f"{spec}: model file or folder not found")
    return spec, {"use_safetensors": True}  # a hub name in the cache: its safetensors, never a pickle


def load_hf(
    spec: str, device: str = "cpu", ctx_len: int | None = None, dtype: str = "float32", device_map: str = ""
) -> tuple[HFSubject, Any]:
    """Load `spec` (folder, .gguf file, or hub name found in the local cache) and its tokenizer.

    Returns `(HFSubject, tokenizer)` with the model's weights in `dtype` (float32, bfloat16, float16;
    a GGUF file is dequantized to it), in eval mode, on `device`. With `device_map` ("auto",
    "balanced", "sequential", ...: accelerate's placement, for a model larger than one device) the
    layers are spread over the devices instead and `device` is not used; inputs then go to the
    device of the first parameter (the embedding), as everywhere else. Every failure (missing,
    corrupt or not-cached model, no accelerate) is a one-line `UserError` naming `spec`.
    """
    if dtype not in SUBJECT_DTYPES:
        raise UserError(f"--subject-dtype {dtype}: choose one of {', '.join(SUBJECT_DTYPES)}")
    if device_map and importlib.util.find_spec("accelerate") is None:
        raise UserError(f"--device-map {device_map}: needs accelerate (pip install accelerate)")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise UserError("a Hugging Face model needs transformers: pip install 'monosemantic[hf]'") from None
    where, kw = _where(spec)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or not Path(where).exists()
    # A hub name is read from the local cache only: this tool never downloads a model on its own.
    kw |= {"local_files_only": True} if offline else {}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no "weights not initialised" walls of text on our stderr
    hf_logging.disable_progress_bar()  # nor per-tensor GGUF bars; loading is a few seconds
    safe = {"use_safetensors": kw.pop("use_safetensors")} if "use_safetensors" in kw else {}
    try:
        tok = AutoTokenizer.from_pretrained(where, **kw)
        placed = {"device_map": device_map} if device_map else {}
        hf = AutoModelForCausalLM.from_pretrained(where, dtype=SUBJECT_DTYPES[dtype], **placed, **kw, **safe)
    except UserError:
        raise
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, safetensors errors...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        hint = "" if Path(where).exists() else " (not a local folder or .gguf file, and not in the Hugging Face cache)"
        raise UserError(f"{spec}: cannot load a causal LM{hint}: {first}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    limit = _max_positions(hf.config)
    n = ctx_len or min(DEFAULT_CTX_LEN, limit or DEFAULT_CTX_LEN)
    if limit is not None and n > limit:
        raise UserError(f"--ctx-len {n}: {spec} allows at most {limit} positions")
    if getattr(tok, "backend_tokenizer", None) is None:
        raise UserError(f"{spec}: the tokenizer is not a fast (tokenizers) tokenizer")
    if tok.backend_tokenizer.get_vocab_size() > int(hf.config.vocab_size):
        raise UserError(
            f"{spec}: the tokenizer has {tok.backend_tokenizer.get_vocab_size()} tokens but the model only "
            f"{hf.config.vocab_size} embeddings"
        )
    model = HFSubject(hf.eval(), n, spec)
    return (model if device_map else model.to(device)), tok


def document_separator(tok: Any, spec: str) -> int:
    """The token id put before each document in the token stream: `<|endoftext|>` where the vocabulary has
    it (the separator of pretraining text, e.g. SmolLM2's, whose Instruct tokenizer's EOS `<|im_end|>` ends a
    chat turn instead), else EOS, else BOS."""
    eot = tok.get_vocab().get("<|endoftext|>") if hasattr(tok, "get_vocab") else None
    if isinstance(eot, int):
        return eot
    for name in ("eos_token_id", "bos_token_id"):
        value = getattr(tok, name, None)
        if isinstance(value, int):
            return value
    raise UserError(f"{spec}: the tokenizer has neither an EOS nor a BOS token to separate documents")
