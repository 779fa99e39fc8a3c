"""The unit-norm decoder constraint (paper.md §3.4)."""

from __future__ import annotations

import torch

from monosemantic.sae.constraints import adam, normalize_rows_, project_out_rows, remove_parallel_grad


def test_project_out_rows_by_hand() -> None:
    W = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    grad = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    assert torch.equal(project_out_rows(grad, W), torch.tensor([[0.0, 4.0], [3.0, 0.0]]))


def test_remove_parallel_grad_leaves_gradient_orthogonal_to_rows() -> None:
    W = torch.nn.Parameter(torch.randn(16, 8))
    normalize_rows_(W)
    x = torch.randn(32, 16)
    ((x @ W).sin().sum()).backward()
    full = W.grad.clone()
    remove_parallel_grad(W)
    assert torch.allclose((W.grad * W).sum(dim=1), torch.zeros(16), atol=1e-5)
    # only the parallel part went: what is left is the tangential part of the original gradient
    assert torch.allclose((full - W.grad) * 1.0, (full * W).sum(dim=1, keepdim=True) * W, atol=1e-5)


def test_remove_parallel_grad_in_place_matches_the_pure_projection() -> None:
    # the in-place version folds the normalisation into one coefficient; rows need not be unit norm
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(64, 32) * torch.rand(64, 1) * 3)
    W.grad = torch.randn(64, 32)
    expected = project_out_rows(W.grad, W.detach())
    remove_parallel_grad(W)
    assert torch.allclose(W.grad, expected, rtol=1e-5, atol=1e-6)


def test_adam_is_fused_on_cpu_and_matches_the_plain_adam() -> None:
    torch.manual_seed(0)
    W = [torch.nn.Parameter(torch.randn(16, 8)), torch.nn.Parameter(torch.randn(8))]
    W_plain = [torch.nn.Parameter(p.detach().clone()) for p in W]
    start = [p.detach().clone() for p in W]
    fast = adam(iter(W), 1e-2, (0.9, 0.99), 1e-8)
    plain = torch.optim.Adam(W_plain, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, foreach=False)
    assert fast.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(20):
        grads = [torch.randn_like(p) for p in W]
        for p, q, g in zip(W, W_plain, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        fast.step()
        plain.step()
    for p, q, p0 in zip(W, W_plain, start, strict=True):
        assert (p - p0).abs().max() > 0.05  # 20 steps of lr 1e-2 moved it
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)


def test_projected_gradient_is_gradient_on_the_sphere() -> None:
    # At unit-norm rows, the gradient of L(W / ‖W‖) is (I − d dᵀ) ∇L: the projection we apply.
    torch.manual_seed(0)
    W0 = torch.randn(6, 5, dtype=torch.float64)
    W0 = W0 / W0.norm(dim=1, keepdim=True)
    x = torch.randn(10, 6, dtype=torch.float64)

    def loss(W):
        return ((x @ W).tanh() ** 2).sum()

    W = W0.clone().requires_grad_(True)
    loss(W).backward()
    V = W0.clone().requires_grad_(True)
    loss(V / V.norm(dim=1, keepdim=True)).backward()
    assert torch.allclose(project_out_rows(W.grad, W0), V.grad, atol=1e-10)


def test_step_along_projected_gradient_keeps_norm_to_first_order() -> None:
    W = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    normalize_rows_(W)
    (W.exp().sum()).backward()
    remove_parallel_grad(W)
    for t in (1e-2, 1e-3):
        drift = ((W - t * W.grad).norm(dim=1) - 1).abs().max().item()
        assert drift <= t**2 * W.grad.norm(dim=1).max().item() ** 2  # O(t²), no O(t) term


def test_remove_parallel_grad_without_grad_is_noop() -> None:
    W = torch.nn.Parameter(torch.randn(3, 2))
    remove_parallel_grad(W)
    assert W.grad is None


def test_normalize_rows() -> None:
    W = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    normalize_rows_(W)
    assert torch.allclose(W, torch.tensor([[0.6, 0.8], [0.0, -1.0]]))
