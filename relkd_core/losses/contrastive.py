"""Contrastive distillation: InfoNCE over point-pixel pairs (PPKT), or over superpixels (SLidR).

Each point must pick out its own pixel among all N pixels of the batch. Every other pixel is a
negative, including pixels of the same class elsewhere in the scene: this is the
self-similarity problem the relational loss avoids.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from relkd_core.errors import LossError
from relkd_core.losses.base import LossOutput, check_pairs, normalize_pairs

__all__ = ['contrastive_loss', 'pool_segments']


def pool_segments(features: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Mean of the (N, D) rows of each segment, in the order of ``torch.unique(segments)``.

    ``segments`` is (N,) int64: rows with one id belong to one superpixel. Returns (S, D).
    """
    _, inverse = torch.unique(segments, return_inverse=True)
    num_segments = int(inverse.max()) + 1 if inverse.numel() else 0
    sums = features.new_zeros((num_segments, features.shape[1])).index_add_(0, inverse, features)
    counts = torch.bincount(inverse, minlength=num_segments).clamp_min(1)
    return sums / counts.unsqueeze(1).to(features.dtype)


def contrastive_loss(point_features: torch.Tensor, pixel_features: torch.Tensor, *,
                     temperature: float = 0.07,
                     segments: torch.Tensor | None = None) -> LossOutput:
    """InfoNCE of N (D-dim) point features against their pixels' features.

    ``loss = mean_i -log softmax_j(k_i . q_j / temperature)[i]`` over unit rows (PPKT's
    point-to-pixel direction; the teacher side gets no gradient in distillation anyway).

    With ``segments`` ((N,) int64 superpixel ids, unique across the batch), point and pixel
    features are first averaged per superpixel and re-normalised, and the InfoNCE runs over the
    S superpixels (SLidR). SLidR pools every pixel of a superpixel; here only the paired pixels
    are pooled, which are the ones a point lands on.
    """
    check_pairs(point_features, pixel_features)
    if not temperature > 0:
        raise LossError(f'temperature must be > 0, got {temperature}')
    k, q = normalize_pairs(point_features, pixel_features)
    parts: dict[str, torch.Tensor] = {}
    if segments is not None:
        if segments.shape != (k.shape[0],) or segments.dtype != torch.int64:
            raise LossError(f'segments: expected ({k.shape[0]},) int64 superpixel ids, got '
                            f'{tuple(segments.shape)} {segments.dtype}')
        k = functional.normalize(pool_segments(k, segments), dim=1)
        q = functional.normalize(pool_segments(q, segments), dim=1)
        parts['segments'] = torch.tensor(float(k.shape[0]))
    logits = k @ q.T / temperature
    targets = torch.arange(k.shape[0], device=k.device)
    total = functional.cross_entropy(logits, targets)
    with torch.no_grad():
        parts['accuracy'] = (logits.argmax(dim=1) == targets).float().mean()
    return LossOutput(total, parts)
