"""What every distillation loss takes and returns.

Inputs are N matched pairs: row i of ``point_features`` (the student's feature of a lidar point)
and row i of ``pixel_features`` (the frozen teacher's feature of the pixel that point projects
to). Losses L2-normalise both themselves, so callers pass raw features.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional

from relkd_core.errors import LossError

__all__ = ['LossOutput', 'check_pairs', 'normalize_pairs']


@dataclasses.dataclass(frozen=True)
class LossOutput:
    """A loss value and its named parts.

    Attributes:
        total: scalar tensor to back-propagate.
        parts: scalar tensors, detached, for logging (e.g. ``cross_diag``, ``intra``).
    """

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


def check_pairs(point_features: torch.Tensor, pixel_features: torch.Tensor,
                min_pairs: int = 1) -> None:
    """Raise LossError unless both are (N, D) floating tensors of one shape with N >= min_pairs."""
    for name, x in (('point_features', point_features), ('pixel_features', pixel_features)):
        if not isinstance(x, torch.Tensor):
            raise LossError(f'{name}: expected a torch.Tensor (N, D), got {type(x).__name__}')
        if x.ndim != 2:
            raise LossError(f'{name}: expected shape (N, D), got {tuple(x.shape)}')
        if not x.is_floating_point():
            raise LossError(f'{name}: expected a floating dtype, got {x.dtype}')
    if point_features.shape != pixel_features.shape:
        raise LossError(
            f'point_features {tuple(point_features.shape)} and pixel_features '
            f'{tuple(pixel_features.shape)} must have one shape: one row per point-pixel pair, '
            'projected to the teacher dimension'
        )
    if point_features.shape[0] < min_pairs:
        raise LossError(f'expected at least {min_pairs} point-pixel pair(s), got '
                        f'{point_features.shape[0]}')


def normalize_pairs(point_features: torch.Tensor, pixel_features: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalise the rows of both in float32 (losses on unit vectors are cheap to get wrong
    in half precision: 1 - cos of near-identical vectors vanishes below fp16 resolution)."""
    return (functional.normalize(point_features.float(), dim=1),
            functional.normalize(pixel_features.float(), dim=1))
