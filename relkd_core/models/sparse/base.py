"""The small interface every sparse-convolution backend implements.

A network over sparse voxels needs only three operations, each at one resolution *level* of a
voxel pyramid (level 0 = the input voxels, level l+1 = cells of level l halved in every axis):

- ``subm_conv``: a submanifold convolution (odd kernel, stride 1): outputs at the input voxels;
- ``down_conv``: a 2×2×2 stride-2 convolution from level l to level l+1;
- ``up_conv``: its transpose, from level l+1 back onto the voxels of level l.

Everything else (batch norm, ReLU, 1×1 convolutions, concatenation of skip connections) acts on
the (V, C) feature matrix alone and lives in the model. A backend builds a
:class:`SparseGeometry` once per coordinate set; it owns the voxels of every level and caches the
kernel maps, so the many convolutions of one level share them.

Weights are backend independent, shape (K³, C_in, C_out) as in MinkowskiEngine, kernel offsets
ordered with x fastest: offset index ``k = i_x + K·i_y + K²·i_z`` with ``i ∈ [0, K)``, and
offset ``i - K // 2`` for odd K (centred) or ``i`` for K = 2 (the child ``c - 2·parent``).
Features at level 0 are in the order of the input coordinates; the order inside coarser levels
is the backend's own business (the model never looks at it).
"""

from __future__ import annotations

import abc

import torch

__all__ = ["SparseGeometry", "check_coords"]


class SparseGeometry(abc.ABC):
    """Voxels of every pyramid level of one coordinate set, and their cached kernel maps."""

    def __init__(self, num_levels: int) -> None:
        self.num_levels = num_levels

    @abc.abstractmethod
    def num_voxels(self, level: int) -> int:
        """Number of voxels at ``level`` (0 = input voxels)."""

    @abc.abstractmethod
    def subm_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Submanifold convolution at ``level``: (V_l, C_in) -> (V_l, C_out).

        ``weight`` is (K³, C_in, C_out) for an odd K; the output voxel p sums
        ``features[p + offset_k] @ weight[k]`` over the occupied neighbours.
        """

    @abc.abstractmethod
    def down_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """2×2×2 stride-2 convolution: (V_l, C_in) at ``level`` -> (V_{l+1}, C_out).

        ``weight`` is (8, C_in, C_out); voxel c feeds its parent ``floor(c / 2)`` through
        ``weight[k]`` with k the child offset ``c - 2·parent``.
        """

    @abc.abstractmethod
    def up_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Transpose of ``down_conv(level)``: (V_{l+1}, C_in) -> (V_l, C_out).

        Every voxel c of ``level`` gets ``features[parent(c)] @ weight[k(c)]``.
        """


def check_coords(coords: torch.Tensor) -> None:
    """Raise ValueError unless ``coords`` is (V, 4) int64 ``(batch, a, b, c)``."""
    if coords.dtype != torch.int64 or coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(
            f"coords must be (V, 4) int64 (batch, a, b, c), got {tuple(coords.shape)} "
            f"{coords.dtype}"
        )
