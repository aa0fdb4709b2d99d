"""Distillation losses against hand-computed values on tiny matrices."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional

from relkd_core.config import load_config
from relkd_core.errors import ConfigError, LossError
from relkd_core.losses import (
    DistillationLoss,
    LossConfig,
    contrastive_loss,
    pool_segments,
    relational_loss,
    relational_loss_dense,
    similarity_loss,
)

# Three 2-D unit pairs with hand-checkable dot products.
K = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
Q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


def _random_pairs(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator), torch.randn(n, d, generator=generator)


def test_similarity_loss_hand_value() -> None:
    # cos: 1, 0, 0 -> mean(1 - cos) = 2/3
    out = similarity_loss(K, Q)
    assert out.total.item() == pytest.approx(2 / 3)
    assert out.parts['cosine'].item() == pytest.approx(1 / 3)


def test_relational_loss_hand_value() -> None:
    # K Qᵀ = [[1,1,0],[0,0,1],[1,1,0]], Q Qᵀ = [[1,1,0],[1,1,0],[0,0,1]]
    # |K Qᵀ - Q Qᵀ| = [[0,0,0],[1,1,1],[1,1,1]] -> diag mean 2/3, off-diag mean 4/6
    # K Kᵀ = [[1,0,1],[0,1,0],[1,0,1]]; |K Kᵀ - Q Qᵀ| off-diag: (0,1)=1 (0,2)=1 (1,0)=1
    # (1,2)=0 (2,0)=1 (2,1)=0 -> 4/6
    for loss in (relational_loss, relational_loss_dense):
        out = loss(K, Q, intra_weight=0.5)
        assert out.parts['cross_diag'].item() == pytest.approx(2 / 3)
        assert out.parts['cross_off'].item() == pytest.approx(2 / 3)
        assert out.parts['intra'].item() == pytest.approx(2 / 3)
        assert out.total.item() == pytest.approx(4 / 3 + 0.5 * 2 / 3)


def test_relational_loss_diagonal_term_is_one_minus_cos() -> None:
    k, q = _random_pairs(50, 16)
    out = relational_loss(k, q)
    assert out.parts['cross_diag'].item() == pytest.approx(similarity_loss(k, q).total.item(),
                                                           rel=1e-5)


def test_relational_loss_invariant_to_pair_order() -> None:
    k, q = _random_pairs(64, 8)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    a, b = relational_loss(k, q), relational_loss(k[order], q[order])
    assert a.total.item() == pytest.approx(b.total.item(), rel=1e-5)
    for name in a.parts:
        assert a.parts[name].item() == pytest.approx(b.parts[name].item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize('n', [1, 2, 7, 33])
@pytest.mark.parametrize('block_size', [1, 4, 1024])
def test_relational_loss_blocked_equals_dense_with_gradients(n: int, block_size: int) -> None:
    k, q = _random_pairs(n, 6, seed=n)
    k1, k2 = k.clone().requires_grad_(), k.clone().requires_grad_()
    blocked = relational_loss(k1, q, intra_weight=0.3, block_size=block_size)
    dense = relational_loss_dense(k2, q, intra_weight=0.3)
    (2.0 * blocked.total).backward()
    (2.0 * dense.total).backward()
    assert blocked.total.item() == pytest.approx(dense.total.item(), rel=1e-5)
    assert k1.grad is not None and k2.grad is not None
    assert torch.allclose(k1.grad, k2.grad, atol=1e-6)
    assert torch.isfinite(k1.grad).all()
    assert k1.grad.abs().sum() > 0


@pytest.mark.parametrize('loss', [relational_loss, relational_loss_dense, similarity_loss])
def test_loss_zero_when_points_equal_pixels(loss) -> None:  # type: ignore[no-untyped-def]
    _, q = _random_pairs(20, 12)
    k = (3.0 * q).clone().requires_grad_()  # the scale is normalised away
    out = loss(k, q)
    assert out.total.item() == pytest.approx(0.0, abs=1e-6)
    out.total.backward()
    assert k.grad is not None and torch.isfinite(k.grad).all()


def test_contrastive_loss_hand_value() -> None:
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = contrastive_loss(k, q, temperature=0.5)
    # logits [[2, 0], [0, 2]] -> -log(e²/(e²+1)) for each row
    assert out.total.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)))
    assert out.parts['accuracy'].item() == 1.0


def test_contrastive_loss_matches_cross_entropy_and_has_gradients() -> None:
    k, q = _random_pairs(30, 5)
    k = k.requires_grad_()
    out = contrastive_loss(k, q, temperature=0.07)
    logits = functional.normalize(k, dim=1) @ functional.normalize(q, dim=1).T / 0.07
    expected = functional.cross_entropy(logits, torch.arange(30))
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)
    out.total.backward()
    assert k.grad is not None and torch.isfinite(k.grad).all()


def test_contrastive_loss_superpixels_pool_before_infonce() -> None:
    k, q = _random_pairs(6, 4)
    segments = torch.tensor([5, 5, 9, 9, 9, 2])
    pooled = contrastive_loss(k, q, temperature=0.1, segments=segments)
    kn, qn = functional.normalize(k, dim=1), functional.normalize(q, dim=1)
    pk = functional.normalize(pool_segments(kn, segments), dim=1)
    pq = functional.normalize(pool_segments(qn, segments), dim=1)
    assert pk.shape == (3, 4)
    # torch.unique order: 2, 5, 9
    assert torch.allclose(pool_segments(kn, segments)[1], kn[:2].mean(dim=0))
    expected = functional.cross_entropy(pk @ pq.T / 0.1, torch.arange(3))
    assert pooled.total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert pooled.parts['segments'].item() == 3


def test_distillation_loss_weighted_mix() -> None:
    k, q = _random_pairs(40, 8)
    config = LossConfig(weights={'relational': 1.0, 'similarity': 0.5, 'contrastive': 0.25})
    out = DistillationLoss(config)(k, q)
    expected = (relational_loss(k, q).total + 0.5 * similarity_loss(k, q).total
                + 0.25 * contrastive_loss(k, q).total)
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(out.parts) >= {'relational', 'similarity', 'contrastive', 'relational/intra',
                              'contrastive/accuracy'}


def test_relational_loss_memory_aware_at_scale() -> None:
    # N = 8192, D = 512: the dense form would hold several 256 MiB float matrices; the blocked
    # form stores 2·N² int8 signs. Here only check it runs and matches similarity on the
    # diagonal; time and memory are measured by bench/bench_losses.py.
    k, q = _random_pairs(2048, 64)
    k.requires_grad_()
    out = relational_loss(k, q, block_size=256)
    out.total.backward()
    assert k.grad is not None and torch.isfinite(k.grad).all()
    assert out.parts['cross_diag'].item() == pytest.approx(similarity_loss(k, q).total.item(),
                                                           rel=1e-4)


@pytest.mark.parametrize(('call', 'message'), [
    (lambda: similarity_loss(torch.zeros(3, 4), torch.zeros(3, 5)), 'must have one shape'),
    (lambda: similarity_loss(torch.zeros(4), torch.zeros(4)), r'expected shape \(N, D\)'),
    (lambda: similarity_loss(torch.zeros(0, 4), torch.zeros(0, 4)), 'at least 1'),
    (lambda: similarity_loss(torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 4)),
     'floating dtype'),
    (lambda: contrastive_loss(torch.ones(2, 2), torch.ones(2, 2), temperature=0.0),
     'temperature'),
    (lambda: contrastive_loss(torch.ones(2, 2), torch.ones(2, 2), segments=torch.zeros(3)),
     'superpixel ids'),
    (lambda: relational_loss(torch.ones(2, 2), torch.ones(2, 2), block_size=0), 'block_size'),
    (lambda: relational_loss(torch.ones(2, 2), torch.ones(2, 2, requires_grad=True)),
     'teacher is frozen'),
])
def test_losses_reject_bad_input(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LossError, match=message):
        call()


@pytest.mark.parametrize(('overrides', 'message'), [
    (['weights={}'], 'at least one loss'),
    (['weights={infonce: 1.0}'], 'unknown loss'),
    (['weights={relational: 0.0}'], 'must be > 0'),
    (['superpixels=true'], 'only the contrastive loss'),
    (['temperature=0'], 'temperature'),
])
def test_loss_config_rejects_bad_values(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(LossConfig, None, overrides)


def test_distillation_loss_superpixels_need_segments() -> None:
    loss = DistillationLoss(LossConfig(weights={'contrastive': 1.0}, superpixels=True))
    with pytest.raises(LossError, match='--superpixels'):
        loss(torch.ones(2, 2), torch.ones(2, 2))
