"""Relational distillation (Mahmoud, Harakeh, Waslander, ECCV 2024).

Match the *similarity structure* of the teacher rather than each feature. With K the unit
point features and Q the unit pixel features of N pairs (row i of each is one pair):

- cross-modal: ``C = |K Qᵀ - Q Qᵀ|``, ``L_cross = mean_i C_ii + mean_{i≠j} C_ij``;
  since q_i . q_i = 1, ``C_ii = 1 - cos(k_i, q_i)``: the diagonal is the similarity loss.
- intra-modal: ``L_intra = mean_{i≠j} |K Kᵀ - Q Qᵀ|_ij``.
- ``L = L_cross + λ · L_intra``.

A point is never asked to be dissimilar from pixels of its own class (the contrastive loss's
self-similarity problem); it is asked to be exactly as similar as the teacher says.

Memory: the dense form holds several N×N float matrices and their gradients (N = 8192: 256 MiB
each). :func:`relational_loss` instead walks blocks of rows, keeps only the signs of the
differences (int8, 2·N² bytes) for the backward pass, and never materialises a full float N×N.
:func:`relational_loss_dense` is the plain autograd form, kept as the reference.
"""

from __future__ import annotations

from typing import Any

import torch

from relkd_core.errors import LossError
from relkd_core.losses.base import LossOutput, check_pairs, normalize_pairs

__all__ = ['relational_loss', 'relational_loss_dense']


def relational_loss_dense(point_features: torch.Tensor, pixel_features: torch.Tensor, *,
                          intra_weight: float = 1.0) -> LossOutput:
    """Relational loss by plain autograd on full N×N matrices (the reference implementation)."""
    check_pairs(point_features, pixel_features)
    k, q = normalize_pairs(point_features, pixel_features)
    n = k.shape[0]
    qq = q @ q.T
    cross = (k @ q.T - qq).abs()
    intra = (k @ k.T - qq).abs()
    off = ~torch.eye(n, dtype=torch.bool, device=k.device)
    diag = cross.diagonal().mean()
    cross_off = cross[off].mean() if n > 1 else cross.new_zeros(())
    intra_off = intra[off].mean() if n > 1 else intra.new_zeros(())
    total = diag + cross_off + intra_weight * intra_off
    return LossOutput(total, _parts(diag, cross_off, intra_off))


def relational_loss(point_features: torch.Tensor, pixel_features: torch.Tensor, *,
                    intra_weight: float = 1.0, block_size: int = 256) -> LossOutput:
    """Relational loss ``L_cross + intra_weight · L_intra`` over N pairs of (N, D) features.

    Rows are processed ``block_size`` at a time; peak extra memory is about ``2 · N²`` bytes
    of signs, ``5 · block_size · N`` floats of block temporaries and ``6 · N · D`` floats of
    normalised copies and gradients (bench/bench_losses.py measures it). Equal to
    :func:`relational_loss_dense` (values and gradients) up to float rounding. Gradients flow
    to ``point_features`` only: the teacher is frozen, so ``pixel_features`` must not require
    grad (use the dense form to differentiate both).
    """
    check_pairs(point_features, pixel_features)
    if block_size < 1:
        raise LossError(f'block_size must be >= 1, got {block_size}')
    if pixel_features.requires_grad:
        raise LossError('relational_loss: pixel_features require grad, but the teacher is frozen; '
                        'detach them, or use relational_loss_dense to differentiate both sides')
    k, q = normalize_pairs(point_features, pixel_features)
    total, parts = _BlockedRelational.apply(k, q.detach(), float(intra_weight), int(block_size))
    return LossOutput(total, _parts(parts[0], parts[1], parts[2]))


def _parts(diag: torch.Tensor, cross_off: torch.Tensor, intra: torch.Tensor
           ) -> dict[str, torch.Tensor]:
    diag, cross_off, intra = diag.detach(), cross_off.detach(), intra.detach()
    return {'cross': diag + cross_off, 'cross_diag': diag, 'cross_off': cross_off,
            'intra': intra}


def _weights(n: int) -> tuple[float, float]:
    """Weights of one diagonal and one off-diagonal entry in the means."""
    return 1.0 / n, (1.0 / (n * (n - 1)) if n > 1 else 0.0)


class _BlockedRelational(torch.autograd.Function):
    """Forward in row blocks; backward from the stored signs of the differences.

    With S_c = sign(K Qᵀ - Q Qᵀ) and S_i = sign(K Kᵀ - Q Qᵀ), each weighted by its mean's
    1/count (diagonal of S_i zero):  dL/dK = S_c Q + λ (S_i + S_iᵀ) K = [S_c, 2λ S_i] [Q; K],
    using that K Kᵀ - Q Qᵀ is symmetric. One (N × 2N)·(2N × D) product per block.
    """

    @staticmethod
    def forward(ctx: Any, k: torch.Tensor, q: torch.Tensor, intra_weight: float,
                block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = k.shape[0]
        both = torch.cat([q, k], dim=0)  # (2N, D): one product gives K Qᵀ and K Kᵀ
        signs = torch.empty((n, 2 * n), dtype=torch.int8, device=k.device)
        diag_sum = k.new_zeros(())
        cross_sum = k.new_zeros(())
        intra_sum = k.new_zeros(())
        for r0 in range(0, n, block_size):
            r1 = min(n, r0 + block_size)
            teacher = q[r0:r1] @ q.T                      # (B, N)
            diff = k[r0:r1] @ both.T                      # (B, 2N)
            diff[:, :n] -= teacher
            diff[:, n:] -= teacher
            signs[r0:r1] = torch.sign(diff).to(torch.int8)
            diff.abs_()
            rows = torch.arange(r1 - r0, device=k.device)
            block_diag = diff[rows, rows + r0]
            diag_sum += block_diag.sum()
            cross_sum += diff[:, :n].sum() - block_diag.sum()
            intra_sum += diff[:, n:].sum() - diff[rows, rows + r0 + n].sum()
        w_diag, w_off = _weights(n)
        diag, cross_off, intra = diag_sum * w_diag, cross_sum * w_off, intra_sum * w_off
        total = diag + cross_off + intra_weight * intra
        ctx.save_for_backward(both, signs)
        ctx.intra_weight, ctx.block_size = intra_weight, block_size
        parts = torch.stack([diag, cross_off, intra])
        ctx.mark_non_differentiable(parts)
        return total, parts

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor, _grad_parts: torch.Tensor
                 ) -> tuple[torch.Tensor | None, None, None, None]:
        both, signs = ctx.saved_tensors
        n = signs.shape[0]
        w_diag, w_off = _weights(n)
        grad_k = torch.empty((n, both.shape[1]), dtype=both.dtype, device=both.device)
        for r0 in range(0, n, ctx.block_size):
            r1 = min(n, r0 + ctx.block_size)
            coeff = signs[r0:r1].to(both.dtype)
            rows = torch.arange(r1 - r0, device=both.device)
            diag_sign = coeff[rows, rows + r0].clone()
            coeff[:, :n] *= w_off
            coeff[:, n:] *= 2.0 * ctx.intra_weight * w_off
            coeff[rows, rows + r0] = diag_sign * w_diag
            coeff[rows, rows + r0 + n] = 0.0
            grad_k[r0:r1] = coeff @ both
        return grad_k * grad_total, None, None, None
