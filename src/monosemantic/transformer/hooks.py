"""Hook points: identity modules at every activation later stages read (STYLE P7).

The names follow TransformerLens, so the same string keys the activation store, the SAE folder,
the feature database and CLI flags. The paper's SAE input is `MLP_POST`, the 512 neurons after
the ReLU ([TM] appendix "Autoencoder Dataset"; paper.md §1 "SAE input site").
"""

from __future__ import annotations

from torch import Tensor, nn

EMBED = "hook_embed"
POS_EMBED = "hook_pos_embed"
RESID_PRE = "blocks.0.hook_resid_pre"
ATTN_OUT = "blocks.0.hook_attn_out"
RESID_MID = "blocks.0.hook_resid_mid"  # residual stream before the MLP
MLP_PRE = "blocks.0.mlp.hook_pre"  # MLP neurons before the ReLU
MLP_POST = "blocks.0.mlp.hook_post"  # MLP neurons after the ReLU: the paper's SAE input
MLP_OUT = "blocks.0.hook_mlp_out"  # the MLP's contribution to the residual stream
RESID_POST = "blocks.0.hook_resid_post"  # residual stream after the MLP

ALL = (EMBED, POS_EMBED, RESID_PRE, ATTN_OUT, RESID_MID, MLP_PRE, MLP_POST, MLP_OUT, RESID_POST)


class HookPoint(nn.Module):
    """Identity; exists so `register_forward_hook` can read or replace an activation by name."""

    def forward(self, x: Tensor) -> Tensor:
        return x
