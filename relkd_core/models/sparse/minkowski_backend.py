"""The MinkowskiEngine backend (optional): the only module of relkd that imports it.

MinkowskiEngine 0.5.4 (2021, unmaintained) builds against current torch on CPU only after
source fixes (``scripts/install_minkowski.sh``) and not at all against CUDA 12+, so nothing
else in relkd needs it. It is here for users who have it and for parity checks: its weights use
our layout, (K³, C_in, C_out) with x-fastest offsets, so no conversion is needed.

MinkowskiEngine keeps its own coordinate manager; each level is a coordinate map key of it
(tensor stride 2^level), and convolutions are its autograd Functions called with explicit
input and output keys. Its level-0 rows may be a permutation of ours; they are mapped both
ways when they are.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from relkd_core.errors import ModelError
from relkd_core.models.sparse.base import SparseGeometry, check_coords

__all__ = ["MinkowskiGeometry", "build_geometry", "check_available", "import_minkowski"]


@functools.cache
def import_minkowski() -> Any:
    """Import MinkowskiEngine once and return the module.

    Raises ModelError with the install script's name when it is missing or broken.
    """
    try:
        import MinkowskiEngine
    except Exception as err:  # ImportError, or an extension built against another torch
        raise ModelError(
            "backend 'minkowski' needs MinkowskiEngine 0.5.4; build it with "
            "scripts/install_minkowski.sh (CPU only), or set backend: native"
        ) from err
    return MinkowskiEngine


def check_available() -> None:
    """Raise ModelError unless MinkowskiEngine imports."""
    import_minkowski()


def build_geometry(coords: torch.Tensor, num_levels: int) -> MinkowskiGeometry:
    """Geometry of (V, 4) int64 ``(batch, a, b, c)`` voxel coordinates over ``num_levels``."""
    return MinkowskiGeometry(coords, num_levels)


class MinkowskiGeometry(SparseGeometry):
    """Coordinate map keys of every level in one MinkowskiEngine coordinate manager."""

    def __init__(self, coords: torch.Tensor, num_levels: int) -> None:
        super().__init__(num_levels)
        check_coords(coords)
        me = import_minkowski()
        from MinkowskiEngine.MinkowskiConvolution import (
            MinkowskiConvolutionFunction,
            MinkowskiConvolutionTransposeFunction,
        )
        from MinkowskiEngine.MinkowskiKernelGenerator import KernelGenerator
        from MinkowskiEngineBackend._C import ConvolutionMode

        self._conv = MinkowskiConvolutionFunction
        self._conv_transpose = MinkowskiConvolutionTransposeFunction
        self._kernel_generator = KernelGenerator
        self._mode = ConvolutionMode.DEFAULT
        tensor = me.SparseTensor(
            features=torch.zeros((coords.shape[0], 1), device=coords.device),
            coordinates=coords.to(torch.int32).contiguous(),
            device=coords.device,
        )
        self._manager = tensor.coordinate_manager
        self._keys = [tensor.coordinate_map_key]
        # Rows of MinkowskiEngine's level 0 in terms of ours, and back; None when identical.
        to_engine = tensor.unique_index.to(torch.int64)
        identity = torch.arange(coords.shape[0], device=coords.device)
        self._to_engine = None if torch.equal(to_engine, identity) else to_engine
        self._from_engine = None if self._to_engine is None else tensor.inverse_mapping.long()
        self._generators: dict[tuple[int, int], Any] = {}

    def num_voxels(self, level: int) -> int:
        return int(self._manager.size(self._key(level)))

    def subm_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        kernel_size = round(weight.shape[0] ** (1.0 / 3.0))
        key = self._key(level)
        out = self._conv.apply(
            self._in(level, features), weight.contiguous(), self._generator(kernel_size, 1),
            self._mode, key, key, self._manager,
        )  # fmt: skip
        return self._out(level, out)

    def down_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self._conv.apply(
            self._in(level, features), weight.contiguous(), self._generator(2, 2), self._mode,
            self._key(level), self._key(level + 1), self._manager,
        )  # fmt: skip
        return out

    def up_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        out = self._conv_transpose.apply(
            features.contiguous(), weight.contiguous(), self._generator(2, 2), self._mode,
            self._key(level + 1), self._key(level), self._manager,
        )  # fmt: skip
        return self._out(level, out)

    def _key(self, level: int) -> Any:
        if not 0 <= level < self.num_levels:
            raise ValueError(f"level must be in [0, {self.num_levels}), got {level}")
        while len(self._keys) <= level:
            self._keys.append(self._manager.stride(self._keys[-1], [2, 2, 2]))
        return self._keys[level]

    def _generator(self, kernel_size: int, stride: int) -> Any:
        key = (kernel_size, stride)
        if key not in self._generators:
            self._generators[key] = self._kernel_generator(
                kernel_size=kernel_size, stride=stride, dilation=1, dimension=3
            )
        return self._generators[key]

    def _in(self, level: int, features: torch.Tensor) -> torch.Tensor:
        if level == 0 and self._to_engine is not None:
            return features.index_select(0, self._to_engine)
        return features.contiguous()

    def _out(self, level: int, features: torch.Tensor) -> torch.Tensor:
        if level == 0 and self._from_engine is not None:
            return features.index_select(0, self._from_engine)
        return features
