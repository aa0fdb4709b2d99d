"""Distillation losses between student point features and frozen teacher pixel features.

- ``contrastive``: InfoNCE over pairs (PPKT), optionally over superpixels (SLidR).
- ``similarity``: mean 1 - cos (CLIP2Scene, OpenScene, ScaLR).
- ``relational``: L_cross + λ·L_intra (Mahmoud et al., ECCV 2024).

:class:`DistillationLoss` evaluates a weighted mix of them from a :class:`LossConfig`; every
loss returns its scalar and named parts (:class:`LossOutput`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch

from relkd_core.config import bounded
from relkd_core.errors import ConfigError, LossError
from relkd_core.losses.base import LossOutput
from relkd_core.losses.contrastive import contrastive_loss, pool_segments
from relkd_core.losses.relational import relational_loss, relational_loss_dense
from relkd_core.losses.similarity import similarity_loss

__all__ = [
    'LOSS_NAMES',
    'DistillationLoss',
    'LossConfig',
    'LossOutput',
    'contrastive_loss',
    'pool_segments',
    'relational_loss',
    'relational_loss_dense',
    'similarity_loss',
]

LOSS_NAMES = ('contrastive', 'similarity', 'relational')


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Which losses to mix, with their weights and settings.

    Fields:
        weights: loss name -> weight, e.g. ``{relational: 1.0}`` or
            ``{relational: 1.0, similarity: 0.5}``; names from ``contrastive``, ``similarity``,
            ``relational``; weights > 0.
        pairs_per_batch: point-pixel pairs N sampled per step (over all scans of the step).
        temperature: InfoNCE temperature τ (PPKT and SLidR: 0.07).
        superpixels: pool the contrastive loss per SLIC superpixel (SLidR); needs a dataset
            prepared with ``--superpixels``.
        intra_weight: λ, weight of L_intra in the relational loss.
        block_size: rows per block of the relational loss (memory vs speed; any value gives the
            same result).
    """

    weights: dict[str, float] = dataclasses.field(default_factory=lambda: {'relational': 1.0})
    pairs_per_batch: int = bounded(4096, min=2)
    temperature: float = bounded(0.07, min=1e-4)
    superpixels: bool = False
    intra_weight: float = bounded(1.0, min=0.0)
    block_size: int = bounded(256, min=1)

    def validate(self) -> None:
        if not self.weights:
            raise ConfigError(f'weights: name at least one loss of {list(LOSS_NAMES)}')
        for name, weight in self.weights.items():
            if name not in LOSS_NAMES:
                raise ConfigError(f'weights.{name}: unknown loss; expected one of '
                                  f'{list(LOSS_NAMES)}')
            if not weight > 0:
                raise ConfigError(f'weights.{name}: weight must be > 0, got {weight}')
        if self.superpixels and 'contrastive' not in self.weights:
            raise ConfigError('superpixels: only the contrastive loss pools superpixels; add '
                              'weights.contrastive or set superpixels: false')


class DistillationLoss:
    """The weighted sum of the configured losses: ``loss(K, Q, segments) -> LossOutput``.

    Parts are named ``<loss>`` (each loss's unweighted value) and ``<loss>/<part>``.
    """

    def __init__(self, config: LossConfig) -> None:
        self.config = config
        self._losses: dict[str, Callable[..., LossOutput]] = {
            'contrastive': functools.partial(contrastive_loss, temperature=config.temperature),
            'similarity': similarity_loss,
            'relational': functools.partial(relational_loss, intra_weight=config.intra_weight,
                                            block_size=config.block_size),
        }

    def __call__(self, point_features: torch.Tensor, pixel_features: torch.Tensor,
                 segments: torch.Tensor | None = None) -> LossOutput:
        if self.config.superpixels and segments is None:
            raise LossError('the contrastive loss is configured with superpixels, but the batch '
                            'has no superpixel ids: prepare the dataset with --superpixels N')
        total = point_features.new_zeros((), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        for name, weight in self.config.weights.items():
            if name == 'contrastive' and self.config.superpixels:
                out = self._losses[name](point_features, pixel_features, segments=segments)
            else:
                out = self._losses[name](point_features, pixel_features)
            total = total + weight * out.total
            parts[name] = out.total.detach()
            parts.update({f'{name}/{key}': value for key, value in out.parts.items()})
        return LossOutput(total, parts)
