"""The browser's live text view (TM's "data-oriented view"): any text, the features active on each token.

    view = TextView(Path("runs/default"))
    out = view.analyze("def f(x):", {"name": "tm2023-4096", "model": "A", "hook": "blocks.0.mlp.hook_post",
                                      "kind": "sae"})
    out["strongest"][i]    # (feature, activation) of token i's strongest feature, or None
    out["active"][i]       # its active features, strongest first (at most `top_k`)

Models, tokenizer and SAEs load on first use and stay in memory. The input is cut to the model's
context (`truncated` says so); the browser adds the character and wall-clock limits. A
`kind='neurons'` dictionary reads the hook's own activations, so neurons can be compared with
features on the same text (paper.md §8). A Hugging Face subject (a dictionary of model `hf-<name>`)
is the model the database was built from (`features/config.json`), with its own tokenizer, and the
text is read as a document start (its separator first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from monosemantic import paths
from monosemantic.data.tokenizer import decode, encode, load_tokenizer
from monosemantic.errors import UserError
from monosemantic.features.stream import dictionary_activations
from monosemantic.io import read_json
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer.model import load_transformer
from monosemantic.transformer.subject import LoadedSubject, hook_dirname, is_run_model, load_subject, subject_key


class TextView:
    """Loaded models and SAEs of one run, for analysing short texts on the CPU."""

    def __init__(self, run: Path, top_k: int = 10) -> None:
        self.layout = paths.RunLayout(Path(run))
        self.top_k = top_k
        self._tok: Any = None
        self._models: dict[str, Any] = {}
        self._subjects: dict[tuple[str, str], LoadedSubject] = {}
        self._saes: dict[tuple[str, str, str], SparseAutoencoder] = {}

    def _tokenizer(self) -> Any:
        if self._tok is None:
            self._tok = load_tokenizer(self.layout.tokenizer / paths.TOKENIZER_JSON)
        return self._tok

    def _model(self, name: str) -> Any:
        if name not in self._models:
            folder = self.layout.transformer(name)
            if not (folder / paths.CONFIG).is_file():
                raise UserError(f"{folder}: no model {name} in this run")
            self._models[name] = load_transformer(folder).eval()
        return self._models[name]

    def _sae(self, model: str, hook: str, name: str) -> SparseAutoencoder:
        key = (model, hook, name)
        if key not in self._saes:
            self._saes[key] = SparseAutoencoder.load(self.layout.saes(model, hook_dirname(hook)) / name).eval()
        return self._saes[key]

    def _subject(self, key: str, hook: str) -> LoadedSubject | None:
        """The Hugging Face model behind database name `key`: the one `features build` ran (its config.json)."""
        if (key, hook) not in self._subjects:
            try:
                built = read_json(self.layout.features / paths.CONFIG).get("features", {})
            except (OSError, ValueError):
                return None
            spec = str(built.get("model", ""))
            if not spec or is_run_model(self.layout, spec) or subject_key(self.layout, spec) != key:
                return None
            self._subjects[key, hook] = load_subject(self.layout, spec, hook, ctx_len=built.get("ctx_len"))
        return self._subjects[key, hook]

    @torch.inference_mode()
    def analyze(self, text: str, dictionary: dict[str, Any]) -> dict[str, Any]:
        """Tokens of `text` and, per token, its strongest and its active units of `dictionary`.

        `dictionary` is a row of the feature database's `dictionaries` table (name, model, hook, kind).
        Returns {"tokens": [str], "strongest": [[f, act] | None], "strongest_act": [float],
        "active": [[[f, act], ...]], "max_act": float, "truncated": bool}.
        """
        s = None if (self.layout.transformer(dictionary["model"]) / paths.CONFIG).is_file() else \
            self._subject(dictionary["model"], dictionary["hook"])  # fmt: skip
        if s is not None:  # a Hugging Face subject: its tokenizer, and the separator a document starts with
            assert s.tokenizer is not None
            tok, model, ctx_len, hook = s.tokenizer, s.model, s.ctx_len, s.site.module
            ids = [s.eot, *encode(tok, text)]
        else:
            tok = self._tokenizer()
            model = self._model(dictionary["model"])
            ids, ctx_len, hook = encode(tok, text), model.cfg.ctx_len, model.hook_point(dictionary["hook"])
        truncated = len(ids) > ctx_len
        ids = ids[:ctx_len]
        if not ids:
            return {
                "tokens": [],
                "strongest": [],
                "strongest_act": [],
                "active": [],
                "max_act": 0.0,
                "truncated": False,
            }
        saes = {} if dictionary["kind"] == "neurons" else {
            "sae": self._sae(dictionary["model"], dictionary["hook"], dictionary["name"])
        }  # fmt: skip
        which = s.site.which if s is not None else "output"
        neurons, feats = dictionary_activations(model, hook, saes, torch.tensor([ids], dtype=torch.long), which)
        acts = (neurons if dictionary["kind"] == "neurons" else feats["sae"])[0].float()  # [T, n]
        return {"tokens": [decode(tok, [i]) for i in ids], **_per_token(acts, self.top_k), "truncated": truncated}


def _per_token(acts: torch.Tensor, top_k: int) -> dict[str, Any]:
    """Strongest unit and the top-k active units (activation > 0) of each row of `acts` [T, n]."""
    k = min(top_k, acts.shape[1])
    values, index = acts.topk(k, dim=1)
    active = [
        [[int(f), round(float(v), 4)] for v, f in zip(vs, fs, strict=True) if v > 0]
        for vs, fs in zip(values.tolist(), index.tolist(), strict=True)
    ]
    return {
        "strongest": [a[0] if a else None for a in active],
        "strongest_act": [a[0][1] if a else 0.0 for a in active],
        "active": active,
        "max_act": max((a[0][1] for a in active if a), default=0.0),
    }
