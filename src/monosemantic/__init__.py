"""monosemantic: dictionary learning on a language model's MLP activations.

After Bricken et al. (2023), "Towards Monosemanticity". Stages live in subpackages that read as
the pipeline: data -> transformer -> activations -> sae -> eval -> interp -> browser.
Nothing heavy is imported here (STYLE P12).
"""

__version__ = "0.1.0"
