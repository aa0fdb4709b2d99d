"""Similarity distillation (CLIP2Scene, OpenScene, ScaLR): pull each point onto its pixel."""

from __future__ import annotations

import torch

from relkd_core.losses.base import LossOutput, check_pairs, normalize_pairs

__all__ = ['similarity_loss']


def similarity_loss(point_features: torch.Tensor, pixel_features: torch.Tensor) -> LossOutput:
    """mean_i (1 - cos(k_i, q_i)) over N pairs of (N, D) features; 0 when K = Q, at most 2."""
    check_pairs(point_features, pixel_features)
    k, q = normalize_pairs(point_features, pixel_features)
    total = (1.0 - (k * q).sum(dim=1)).mean()
    return LossOutput(total, {'cosine': 1.0 - total.detach()})
