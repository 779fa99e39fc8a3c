"""The subject model, whichever it is: a run's own transformer or any Hugging Face causal LM.

    s = load_subject(RunLayout(Path("runs/demo")), "A", "blocks.0.mlp.hook_post")
    s = load_subject(layout, "path/to/gpt2-folder", "transformer.h.1.mlp.c_proj:input")
    s.model(tokens)            # int64 [batch, pos] -> logits [batch, pos, vocab]
    s.site.module, s.site.which    # where the activations are read (and spliced back)
    s.tokenizer.encode(text)   # a `tokenizers.Tokenizer`; s.tokens is its tokens folder

Both kinds satisfy the same small interface (`Subject`): a forward from token ids to logits, a
context length, a vocabulary, and hooks found by name. A hook spec is either one of our hook
names (`transformer.hooks`) or a module path with `:input` or `:output` (default output), e.g. the
input of `model.layers.5.mlp.down_proj`, which *is* the neuron vector of a gated MLP
(`act(gate(x)) * up(x)`), as the post-ReLU vector is for the paper's MLP (paper.md §2).

`--model NAME` means the run's `transformer/NAME/` when that folder exists, and otherwise a
Hugging Face model (a `save_pretrained` folder, a `.gguf` file, or a hub name already in the
local cache; a plain word such as `A` is a run model unless written `hf:gpt2`). A Hugging Face
model's artifacts live under a key made from its name: `tokens-hf-<name>/` (the run's corpus in the
model's own tokenizer), `activations/hf-<name>/...`, `sae/hf-<name>/...`, `eval/hf-<name>/...`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from tokenizers import Tokenizer
from torch import Tensor, nn

from monosemantic import paths, provenance
from monosemantic.data.tokenizer import eot_id, load_tokenizer
from monosemantic.errors import UserError
from monosemantic.io import read_config
from monosemantic.runtime import SUBJECT_DTYPES
from monosemantic.transformer import hooks
from monosemantic.transformer.hf import HFSubject, document_separator, load_hf
from monosemantic.transformer.model import Transformer, load_transformer

log = logging.getLogger(__name__)

Which = Literal["input", "output"]
HF_PREFIX = "hf:"
"""`--model hf:NAME` forces a Hugging Face model, for a hub name that looks like a run model's name."""


class Subject(Protocol):
    """What the harvest, the splice and the feature database need from a subject model."""

    def __call__(self, tokens: Tensor) -> Tensor: ...  # int64 [batch, pos] -> logits [batch, pos, vocab]

    def parameters(self) -> Any: ...  # its device comes from the first parameter


@dataclass(frozen=True)
class HookSite:
    """Where activations are read: a module and whether its input or output."""

    module: nn.Module
    which: Which
    spec: str


_SIDES: dict[str, Which] = {"input": "input", "output": "output", "": "output"}
"""A hook spec's suffix → which side of the module is read."""


def parse_hook(spec: str) -> tuple[str, Which]:
    """`"path:input"` -> `("path", "input")`; no suffix means output."""
    path, _, suffix = spec.partition(":")
    which = _SIDES.get(suffix)
    if not path or which is None or not re.fullmatch(r"[A-Za-z0-9_.]+", path):
        raise UserError(f"--hook {spec!r}: expected a hook name or MODULE.PATH[:input|:output]")
    return path, which


def hook_dirname(spec: str) -> str:
    """The folder name of a hook spec: `a.b:input` -> `a.b-input`, output by default (`a.b`)."""
    path, which = parse_hook(spec)
    return path if which == "output" else f"{path}-{which}"


def find_hook(model: nn.Module, spec: str) -> HookSite:
    """The module a hook spec names in `model` (ours by hook name, an HF model by module path)."""
    path, which = parse_hook(spec)
    finder = getattr(model, "find_module", model.get_submodule)
    try:
        module = finder(path)
    except AttributeError:
        known = hooks.ALL if isinstance(model, Transformer) else _some_paths(model)
        raise UserError(f"--hook {spec}: no module {path!r} in the model; e.g. {', '.join(known)}") from None
    return HookSite(module, which, spec)


def _some_paths(model: nn.Module) -> list[str]:
    names = model.module_paths() if isinstance(model, HFSubject) else [n for n, _ in model.named_modules() if n]
    mlp = [n for n in names if "mlp" in n]
    return (mlp or names)[:8]


def context_length(model: nn.Module) -> int:
    """The longest context `model` takes: our transformer's `ctx_len`, or the one an HF subject was loaded with."""
    if isinstance(model, Transformer):
        return model.cfg.ctx_len
    if isinstance(model, HFSubject):
        return model.ctx_len
    raise TypeError(f"{type(model).__name__} is neither our Transformer nor an HFSubject")


def vocab_size(model: nn.Module) -> int:
    """The number of token embeddings of `model`: our transformer's config, or an HF subject's."""
    if isinstance(model, Transformer):
        return model.cfg.vocab_size
    if isinstance(model, HFSubject):
        return model.vocab_size
    raise TypeError(f"{type(model).__name__} is neither our Transformer nor an HFSubject")


# -- which model -----------------------------------------------------------------------------


def is_run_model(layout: paths.RunLayout, model: str) -> bool:
    """`--model NAME` is the run's own transformer when `transformer/NAME/` exists, or NAME is a plain
    word that is not a path (then it is an error to use it before `lm train`); `hf:NAME` never is."""
    if model.startswith(HF_PREFIX) or re.fullmatch(r"[A-Za-z0-9_.-]+", model) is None:
        return False  # hf:NAME, or a path (`layout.transformer("/abs/path")` would be that path)
    return (layout.transformer(model) / paths.CONFIG).is_file() or not Path(model).exists()


def subject_key(layout: paths.RunLayout, model: str) -> str:
    """The folder name of a subject under activations/, sae/, eval/: NAME, or `hf-<name>`."""
    if is_run_model(layout, model):
        return model
    model = model.removeprefix(HF_PREFIX)
    p = Path(model)
    name = p.stem if p.suffix == ".gguf" else (p.name if p.exists() else model.replace("/", "--"))
    return "hf-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _is_our_folder(folder: Path) -> bool:
    """A folder written by `lm train` (a HF folder has a config.json and model.safetensors too)."""
    import json

    try:
        return json.loads((folder / paths.CONFIG).read_text(encoding="utf-8")).get("kind") == "monosemantic.transformer"
    except (OSError, ValueError, AttributeError):
        return False


def load_model(
    ref: str | Path, device: str = "cpu", ctx_len: int | None = None, dtype: str = "float32", device_map: str = ""
) -> Transformer | HFSubject:
    """A run's transformer folder, or a Hugging Face model (see `hf.load_hf`), with weights in `dtype`."""
    if _is_our_folder(Path(ref)):
        return _own_model(Path(ref), device, dtype, device_map)
    return load_hf(str(ref), device, ctx_len, dtype, device_map)[0]


def _own_model(folder: Path, device: str, dtype: str, device_map: str) -> Transformer:
    """A run's transformer with its weights cast to the subject dtype (`--subject-dtype`)."""
    if device_map:
        raise UserError(f"--device-map {device_map}: only for a Hugging Face model, not {folder}")
    if dtype not in SUBJECT_DTYPES:
        raise UserError(f"--subject-dtype {dtype}: choose one of {', '.join(SUBJECT_DTYPES)}")
    m = load_transformer(folder, device)
    return m if dtype == "float32" else m.to(SUBJECT_DTYPES[dtype])


@dataclass
class LoadedSubject:
    """A subject model ready to run: the model, its hook, its tokenizer and its token folder."""

    key: str
    """Folder name under activations/, sae/, eval/ (`A`, or `hf-<name>`)."""
    model: nn.Module
    site: HookSite
    tokenizer: Tokenizer | None
    """None for a run model whose run has no tokenizer/ folder (tokens given directly)."""
    eot: int
    """Token id separating documents in the token stream."""
    ctx_len: int
    tokens: Path
    """The run's corpus in this tokenizer (`tokens/`, or `tokens-<key>/`, made by `ensure_tokens`)."""
    source: str
    """The run's model folder, or what `--model` named."""


def load_subject(
    layout: paths.RunLayout,
    model: str,
    hook: str,
    device: str = "cpu",
    ctx_len: int | None = None,
    dtype: str = "float32",
    device_map: str = "",
) -> LoadedSubject:
    """Load `--model` (run name or HF model), find `--hook` in it, and its tokenizer.

    This is the one entry point for anything that runs the subject model (harvest, eval, the
    feature database). `dtype` is the subject's weight dtype (`--subject-dtype`), `device_map` a
    Hugging Face model's placement over several devices (`hf.load_hf`).
    """
    key = subject_key(layout, model)
    if is_run_model(layout, model):
        folder = layout.transformer(model)
        if not (folder / paths.CONFIG).is_file():
            raise UserError(
                f"{folder}: model not found (no model yet); run `monosemantic lm train --run {layout.root}`"
            )
        m = _own_model(folder, device, dtype, device_map)
        if ctx_len is not None and ctx_len != m.cfg.ctx_len:
            raise UserError(f"--ctx-len {ctx_len}: {folder} was trained with {m.cfg.ctx_len}")
        tok_path = layout.tokenizer / paths.TOKENIZER_JSON
        tok = load_tokenizer(tok_path) if tok_path.exists() else None  # the harvest needs only the tokens
        eot = eot_id(tok) if tok is not None else 0
        return LoadedSubject(key, m, find_hook(m, hook), tok, eot, m.cfg.ctx_len, layout.tokens, str(folder))
    model = model.removeprefix(HF_PREFIX)
    hf_model, hf_tok = load_hf(model, device, ctx_len, dtype, device_map)
    eot = document_separator(hf_tok, model)
    tokens = layout.root / f"tokens-{key}"
    site = find_hook(hf_model, hook)
    return LoadedSubject(key, hf_model, site, hf_tok.backend_tokenizer, eot, hf_model.ctx_len, tokens, model)


def ensure_tokens(layout: paths.RunLayout, s: LoadedSubject, cfg: Any = None, progress: bool = True) -> Path:
    """The run's corpus in the subject's tokenizer: `s.tokens`, written from `corpus/` if missing."""
    from monosemantic.data import tokens
    from monosemantic.data.corpus import iter_documents
    from monosemantic.io import is_complete, read_json

    if s.tokens == layout.tokens:
        if not is_complete(s.tokens):
            raise UserError(f"{layout.tokens}: no tokens yet; run `monosemantic tokenize --run {layout.root}`")
        return s.tokens
    assert s.tokenizer is not None
    ins = provenance.inputs(s.tokens, [layout.corpus], external=[s.source], root=layout.root)
    if provenance.reuse(s.tokens, ins):
        store_cfg = read_config(s.tokens / paths.CONFIG, tokens.KIND)
        if store_cfg.get("vocab_size") != s.tokenizer.get_vocab_size() or store_cfg.get("eot_id") != s.eot:
            raise UserError(f"{s.tokens}: written with another tokenizer than {s.source}'s (delete it to redo)")
        return s.tokens
    if not is_complete(layout.corpus, paths.MANIFEST):
        raise UserError(f"{layout.corpus}: no corpus yet; run `monosemantic corpus build --run {layout.root}`")
    log.info("tokenizing %s with %s's tokenizer -> %s", layout.corpus, s.source, s.tokens)
    n_docs = read_json(layout.corpus / paths.MANIFEST).get("n_documents")
    tokens.write_tokens(
        iter_documents(layout.corpus),
        s.tokenizer,
        s.tokens,
        cfg or tokens.TokensConfig(),
        progress=progress,
        total_docs=n_docs,
        eot=s.eot,
        force=s.tokens.exists(),  # built from an older corpus: redone
        inputs=ins,
    )
    return s.tokens
