"""`monosemantic sae train|eval|export|import`: dictionary learning, its evaluation, and SAELens's format.

`sae train` takes a run's harvested store (`--run`) or any (N, d) array (`--activations`, `--out`);
`pipeline.train_saes` hands the trainer a plain iterator of batches.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from monosemantic import paths, pipeline
from monosemantic.cli.args import add_dataclass_args
from monosemantic.cli.common import MODEL_HELP, RESUME_HELP, add_common, add_sae_args, checkpoint_every, run_config
from monosemantic.errors import UserError
from monosemantic.writers import check_output, hold, hold_output, mark_export

CHECKPOINT_DIR = ".checkpoint"  # inside `sae train --out DIR` while training runs


def add_parsers(sub: Any) -> None:
    from monosemantic.eval.report import EvalConfig

    sae = sub.add_parser("sae", help="sparse autoencoder stage").add_subparsers(dest="action", required=True)
    tr = sae.add_parser(
        "train",
        help="train a ladder of SAEs in one pass",
        description="Train one SAE per size in --n-features on one pass over the activations (the paper's "
        "recipe by default; --arch april2024, topk, batchtopk or jumprelu for the later ones; a recipe's published "
        "schedule is fitted to the run's length unless --no-fit-to-run). With --run: the run's harvested "
        "store, writing RUN/sae/MODEL/HOOK/<arch>-<n>. With --activations PATH (a harvested folder, or any "
        "(N, d) float array in .npy or .safetensors) and --out DIR: writes DIR/<arch>-<n>. n_steps is capped "
        "at one pass over the data: rows are never repeated (paper.md §2).",
    )
    add_common(tr, run_required=False)
    tr.add_argument("--model", default="A", help=MODEL_HELP)
    tr.add_argument("--hook", default=None, help="hook of the run's store (default: the harvest preset's)")
    tr.add_argument("--activations", type=Path, help="train on this store or array instead of a run's")
    tr.add_argument("--out", type=Path, help="output folder with --activations")
    tr.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (cuda:N picks a GPU)")
    tr.add_argument("--resume", action="store_true", help=RESUME_HELP)
    tr.add_argument(
        "--prefetch",
        type=int,
        default=2,
        metavar="N",
        help="read the activations in a background thread up to N batches ahead of the training step "
        "(default 2; 0: no thread, read between steps)",
    )
    tr.add_argument(
        "--log",
        choices=["wandb", "tensorboard"],
        default=None,
        help="also send the training log to Weights & Biases (a run in OUT/wandb; WANDB_MODE=offline keeps it "
        "local) or TensorBoard (event files in OUT/tensorboard); needs the extra of that name (default: neither)",
    )
    add_sae_args(tr)
    tr.set_defaults(func=cmd_sae_train)

    ev = sae.add_parser(
        "eval",
        help="evaluate a run's SAEs",
        description="For every SAE under RUN/sae/MODEL/HOOK: MSE, FVU, L0, L1, dead and dense features, the "
        "density histogram (PNG), and loss recovered with the reconstruction spliced into the model, against "
        "zero and mean ablation, with KL divergence (paper.md §7). Writes RUN/eval/MODEL/HOOK/<name>/metrics.json.",
    )
    add_common(ev)
    ev.add_argument("--model", default="A", help=MODEL_HELP)
    ev.add_argument("--ctx-len", type=int, default=None, help="context length of a Hugging Face model (default 256)")
    add_dataclass_args(ev, EvalConfig)
    ev.set_defaults(func=cmd_sae_eval)

    ex = sae.add_parser(
        "export",
        help="write an SAE in another tool's format",
        description="--format saelens: write SAE_DIR as a SAELens folder (sae_weights.safetensors + cfg.json "
        "that sae_lens.SAE.load_from_disk reads, input scaling and decoder norms folded in) with the run's "
        "metadata (model_name, hook_name, hf_hook_name for a Hugging Face subject, context_size, dataset_path), "
        "sparsity.safetensors (log10 feature density: the feature database's, else measured on the training "
        "activations) and a README.md model card (metrics, recipe, data). --format hub: SAE_DIR is an SAE "
        "folder or a folder of them (a ladder); OUT becomes a folder ready for huggingface_hub upload, one "
        "SAELens folder per SAE (sae_id = its name) and a README.md listing them.",
    )
    ex.add_argument("sae_dir", type=Path)
    ex.add_argument("out", type=Path)
    ex.add_argument("--format", choices=["saelens", "hub"], default="saelens")
    ex.add_argument("--hook", default=None, help="hook name to record in SAELens's metadata (default: the run's)")
    ex.add_argument("--repo-id", default=None, help="USER/REPO the hub folder will be uploaded to (for the README)")
    ex.add_argument(
        "--density-rows",
        type=int,
        default=262_144,
        metavar="N",
        help="training activations encoded for the density when the feature database lacks the SAE "
        "(default 262144; 0: no sparsity.safetensors then)",
    )
    ex.add_argument("--force", action="store_true", help="replace OUT if it exists")
    ex.set_defaults(func=cmd_sae_export)

    im = sae.add_parser(
        "import",
        help="read an SAE from another tool's format",
        description="Read an SAE folder into OUT as a monosemantic SAE, with the same encode and decode: a "
        "SAELens folder (standard, topk, jumprelu, gated; BatchTopK as SAELens saves it, jumprelu), an "
        "EleutherAI sparsify folder (cfg.json + sae.safetensors, TopK), or a Gemma Scope parameter file "
        "(params.npz / params.safetensors, JumpReLU). The format is detected from the file names unless "
        "--format names it. OUT/imported.json keeps the metadata the folder carried. To browse its features, "
        "import into RUN/sae/MODEL/HOOK/NAME and run `features build --run RUN --model MODEL --hook HOOK`.",
    )
    im.add_argument("saelens_dir", type=Path, metavar="SRC")
    im.add_argument("out", type=Path)
    im.add_argument("--format", choices=["auto", "saelens", "sparsify", "gemmascope"], default="auto")
    im.add_argument("--force", action="store_true", help="replace OUT if it exists")
    im.set_defaults(func=cmd_sae_import)


def cmd_sae_train(args: argparse.Namespace) -> None:
    cfg = run_config(args, ("sae",))
    ladder, train = cfg.ladder, cfg.sae
    if args.prefetch < 0:
        raise UserError(f"--prefetch must be 0 or more, got {args.prefetch}")
    if args.activations is not None:
        if args.out is None:
            raise UserError("--activations needs --out DIR for the SAEs")
        ckpt = (args.out / CHECKPOINT_DIR, checkpoint_every(args), args.resume)
        # one writer per --out folder, as per run, and per run when --out lies in one
        with hold(paths.run_around(args.out) or args.out), hold(args.out):
            folders = pipeline.train_saes(
                args.activations, args.out, ladder, train, args.device, args.force, {}, ckpt, args.prefetch, args.log
            )
    else:
        if args.run is None:
            raise UserError("give --run RUN (the run's harvested activations) or --activations PATH --out DIR")
        from monosemantic.transformer.subject import hook_dirname, subject_key

        layout = paths.RunLayout(args.run)
        hook = args.hook or cfg.harvest.hook  # the preset's hook
        key, hook_dir = subject_key(layout, args.model), hook_dirname(hook)
        store = layout.activations(key, hook_dir)
        if not (store / paths.CONFIG).is_file():
            raise UserError(f"{store}: no activations yet; run `monosemantic harvest --run {layout.root}`")
        with hold(args.run):
            folders = pipeline.train_saes(
                store,
                layout.saes(key, hook_dir),
                ladder,
                train,
                args.device,
                args.force,
                {"model": key, "hook": hook},
                (pipeline.sae_checkpoints(layout, key, hook_dir), checkpoint_every(args), args.resume),
                args.prefetch,
                args.log,
            )
    for name, folder in folders.items():
        print(f"{name:<16} {folder}")


def cmd_sae_eval(args: argparse.Namespace) -> None:
    from monosemantic.eval.report import format_table

    cfg = run_config(args, ("eval",))
    layout = paths.RunLayout(args.run)
    with hold(args.run):
        metrics = pipeline.evaluate(layout, args.model, cfg.eval, args.force, args.progress, args.ctx_len)
    print(format_table(metrics))


def cmd_sae_export(args: argparse.Namespace) -> None:
    from monosemantic import interop

    if args.density_rows < 0:
        raise UserError(f"--density-rows must be 0 or more, got {args.density_rows}")
    with hold_output(args.out):  # an OUT in a run: the run's lock, as every writer of the run takes
        if args.format == "hub":
            out = interop.export_hub(args.sae_dir, args.out, args.repo_id, args.hook, args.density_rows, args.force)
        else:
            if not (args.sae_dir / paths.SAE_CONFIG).is_file():
                no_sae = f"{args.sae_dir}: no SAE here (no {paths.SAE_CONFIG})"
                raise UserError(f"{no_sae}; --format hub takes a folder of SAEs")
            if args.out.resolve() == args.sae_dir.resolve():
                raise UserError(f"{args.out}: export into the SAE's own folder would replace its cfg.json")
            out = interop.export_saelens_with_metadata(args.sae_dir, args.out, args.hook, args.density_rows, args.force)
    print(out)


def cmd_sae_import(args: argparse.Namespace) -> None:
    from monosemantic.io import stage_dir, write_json
    from monosemantic.sae.foreign import import_sae

    with hold_output(args.out):  # into RUN/sae/...: the run's lock, as every writer of the run takes
        check_output(args.out, [args.saelens_dir], args.force)
        imported = import_sae(args.saelens_dir, args.format)
        with stage_dir(args.out, force=args.force) as tmp:
            mark_export(tmp, "sae-import")
            imported.sae.save(tmp)
            provenance = {
                "format": imported.format,
                "source": str(args.saelens_dir.resolve()),
                "metadata": imported.metadata,
            }
            write_json(tmp / paths.IMPORTED_JSON, provenance)
    print(f"{imported.format} {imported.sae.architecture} {imported.sae.cfg.n_features} features -> {args.out}")
