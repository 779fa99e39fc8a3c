"""Stage 5: is the dictionary any good? (paper.md §7; may import transformer/, sae/ and data/).

metrics.py   pure fns: mse, normalized_mse, fvu, l0, l1, feature_density, density_summary,
             density_histogram; streaming ReconstructionStats / FeatureStats; the density PNG
splice.py    loss recovered: the SAE reconstruction spliced into the forward, vs zero / mean ablation
report.py    EvalConfig; evaluate_sae(s) -> metrics dict; the stage run() -> eval/<sae>/metrics.json
"""
