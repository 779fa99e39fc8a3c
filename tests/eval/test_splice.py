"""Loss recovered (paper.md §7.4): identity gives 1, zeros give 0, one pass equals separate passes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monosemantic.eval.splice import (
    SpliceResult,
    evaluate_splices,
    loss_recovered,
    mean_activation,
    replaced,
    sae_replacement,
)
from monosemantic.transformer import hooks
from tests.eval.conftest import tiny_sae

HOOK = hooks.MLP_POST


def test_loss_recovered_by_hand():
    assert loss_recovered(2.0, 2.5, 4.0) == 0.75
    assert loss_recovered(2.0, 2.0, 4.0) == 1.0
    assert loss_recovered(2.0, 4.0, 4.0) == 0.0
    assert math.isnan(loss_recovered(2.0, 2.5, 2.0))


def test_splice_result_dict_has_both_normalisations():
    r = SpliceResult(2.0, 2.5, 4.0, 3.0, 0.1, 1.0, 0.5, n_tokens=10)
    d = r.to_dict()
    assert d["loss_recovered"] == 0.75 and d["loss_recovered_vs_mean"] == 0.5
    assert d["n_tokens"] == 10


def test_identity_recovers_everything_and_zeros_recover_nothing(model, windows):
    with torch.no_grad():  # without b_out, zeroing the neurons zeroes the MLP output: the ablation itself
        model.blocks[0].mlp.b_out.zero_()
    res = evaluate_splices(model, HOOK, windows, {"id": lambda a: a, "zero": torch.zeros_like}, batch_size=5)
    ident, zero = res["id"], res["zero"]
    assert abs(ident.loss_zero - ident.loss_clean) > 1e-3  # the MLP matters (random model: either sign)
    assert ident.loss_sae == ident.loss_clean and ident.kl_sae == 0.0
    assert ident.loss_recovered == 1.0
    assert zero.loss_sae == zero.loss_zero and zero.kl_sae == zero.kl_zero
    assert zero.loss_recovered == 0.0
    assert zero.kl_zero > 0 and zero.kl_mean > 0


def test_zero_ablation_zeroes_the_mlp_output_bias_included(model, windows):
    """paper.md §7.4: zero ablation sets the MLP *output* to zero, not just the neurons."""
    r = evaluate_splices(model, HOOK, windows, {"id": lambda a: a}, batch_size=5)["id"]
    with torch.no_grad(), replaced(model, hooks.MLP_OUT, torch.zeros_like):
        direct = model.loss(windows).item()
    assert r.loss_zero == pytest.approx(direct, rel=1e-5)
    with torch.no_grad(), replaced(model, HOOK, torch.zeros_like):
        neurons_only = model.loss(windows).item()
    assert r.loss_zero != pytest.approx(neurons_only, rel=1e-6)  # b_out is a real difference


def test_clean_loss_matches_the_model_loss(model, windows):
    r = evaluate_splices(model, HOOK, windows, {"id": lambda a: a}, batch_size=5)["id"]
    assert r.n_tokens == windows.shape[0] * (windows.shape[1] - 1)
    with torch.no_grad():
        assert r.loss_clean == pytest.approx(model.loss(windows).item(), rel=1e-5)


def test_kl_matches_a_direct_computation(model, windows):
    r = evaluate_splices(model, HOOK, windows, {"zero": torch.zeros_like}, batch_size=5)["zero"]
    with torch.no_grad():
        p = F.log_softmax(model(windows[:, :-1]), dim=-1)
        with replaced(model, HOOK, torch.zeros_like):
            q = F.log_softmax(model(windows[:, :-1]), dim=-1)
    kl = (p.exp() * (p - q)).sum(-1).mean().item()
    assert r.kl_sae == pytest.approx(kl, rel=1e-4)


def test_mean_ablation_equals_replacing_with_the_precomputed_mean(model, windows):
    with torch.no_grad():
        _, cache = model.run_with_cache(windows[:, :-1], (HOOK,))
    mean = cache[HOOK].flatten(0, 1).mean(dim=0)  # [d_mlp]
    assert torch.allclose(mean_activation(model, HOOK, windows, batch_size=5), mean, atol=1e-6)
    r = evaluate_splices(model, HOOK, windows, {"m": lambda a: mean.expand_as(a)}, batch_size=5)["m"]
    assert r.loss_sae == pytest.approx(r.loss_mean, rel=1e-6)
    assert r.kl_sae == pytest.approx(r.kl_mean, rel=1e-4, abs=1e-9)
    assert r.loss_recovered_vs_mean == pytest.approx(0.0, abs=1e-5)
    # a mean passed in is used as given
    r2 = evaluate_splices(model, HOOK, windows, {"m": lambda a: mean.expand_as(a)}, batch_size=5, mean_act=mean)["m"]
    assert r2.loss_sae == r2.loss_mean


def test_several_saes_in_one_pass_equal_separate_passes(model, windows):
    saes = {"a": tiny_sae(64), "b": tiny_sae(16)}
    together = evaluate_splices(model, HOOK, windows, {k: sae_replacement(s) for k, s in saes.items()}, batch_size=5)
    for name, sae in saes.items():
        alone = evaluate_splices(model, HOOK, windows, {name: sae_replacement(sae)}, batch_size=5)[name]
        assert together[name] == alone
    assert together["a"].loss_sae != together["b"].loss_sae


def test_batch_size_does_not_change_the_result(model, windows):
    fns = {"sae": sae_replacement(tiny_sae())}
    a = evaluate_splices(model, HOOK, windows, fns, batch_size=5)["sae"].to_dict()
    b = evaluate_splices(model, HOOK, windows, fns, batch_size=12)["sae"].to_dict()
    assert a == pytest.approx(b, rel=1e-5)


def test_hooks_are_removed_and_mode_restored_even_on_error(model, windows):
    model.train()
    with pytest.raises(ValueError, match="shape"):
        evaluate_splices(model, HOOK, windows, {"bad": lambda a: a[..., :3]})
    assert model.training
    for name in hooks.ALL:
        assert not model.hook_point(name)._forward_hooks


def test_no_replacements_is_a_no_op(model, windows):
    assert evaluate_splices(model, HOOK, windows, {}) == {}
