"""The spconv backend (PyPI ``spconv``): the only module of relkd that imports spconv.

spconv's "native" algorithm (gather–GEMM–scatter in C++) is the one available on CPU; on CUDA
the same calls run its CUDA kernels. Coordinates go to spconv as ``(batch, c, b, a)`` (spatial
axes reversed): spconv flattens its kernel offsets with the first spatial axis slowest, so the
reversal makes its flat offset index equal ours (x fastest) and only a transpose of the weight
is needed: ours (K³, C_in, C_out) -> spconv's (C_out, K, K, K, C_in).

spconv 2.3.8's CPU gather/scatter kernels give wrong sums when torch runs more than one
intra-op thread (measured here: errors of the order of the outputs themselves, in forward and
backward, for submanifold, strided and transposed convolutions, about every call on a few
thousand voxels; exact with one thread). On CPU its kernels therefore run under a one-thread
guard, which costs speed but keeps the results right. On CUDA nothing is changed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from relkd_core.errors import ModelError
from relkd_core.models.sparse.base import SparseGeometry, check_coords

__all__ = ["SpconvGeometry", "build_geometry", "check_available", "import_spconv"]


@functools.cache
def import_spconv() -> tuple[ModuleType, Any]:
    """Import spconv once; return its ``ops`` module and ``ConvAlgo``.

    Raises ModelError with the install command when spconv is missing or broken.
    """
    try:
        import spconv.pytorch.ops as spconv_ops
        from spconv.core import ConvAlgo
    except Exception as err:  # ImportError, or a broken cumm build raising anything else
        raise ModelError(
            "backend 'spconv' needs the spconv package: pip install 'spconv>=2.3,<2.4' "
            "(CPU) or spconv-cu1xx for CUDA, or set backend: native"
        ) from err
    if not torch.cuda.is_available():
        # spconv 2.3.8's backward (ops.indice_conv_backward) asks for the current CUDA stream
        # unconditionally, which raises on a CPU-only torch. Its CPU kernels ignore the
        # stream, so 0 (the default stream handle) is a faithful stand-in. Patched here, in
        # the one module that owns spconv, and only when CUDA is absent.
        spconv_ops.get_current_stream = lambda: 0
    return spconv_ops, ConvAlgo


def check_available() -> None:
    """Raise ModelError unless spconv imports."""
    import_spconv()


def build_geometry(coords: torch.Tensor, num_levels: int) -> SpconvGeometry:
    """Geometry of (V, 4) int64 ``(batch, a, b, c)`` voxel coordinates over ``num_levels``."""
    return SpconvGeometry(coords, num_levels)


class SpconvGeometry(SparseGeometry):
    """spconv index pairs of every level, built lazily and cached."""

    def __init__(self, coords: torch.Tensor, num_levels: int) -> None:
        super().__init__(num_levels)
        check_coords(coords)
        self._ops, conv_algo = import_spconv()
        self._algo = conv_algo.Native
        step = 2 ** max(num_levels - 1, 0)
        spatial = coords[:, 1:]
        if coords.shape[0]:
            # spconv needs indices >= 0: shift by a multiple of 2^(levels-1) so that
            # floor(c / 2^l) groups voxels exactly as before.
            low = torch.div(spatial.min(dim=0).values, step, rounding_mode="floor") * step
            high = spatial.max(dim=0).values - low + 1
            shape = [int(-(-int(h) // step) * step) for h in high.flip(0)]
            self._batch_size = int(coords[:, 0].max()) + 1
        else:
            low = spatial.new_zeros(3)
            shape, self._batch_size = [step] * 3, 1
        reversed_spatial = (spatial - low).flip(1)
        indices = torch.cat([coords[:, :1], reversed_spatial], dim=1).to(torch.int32)
        self._indices: list[torch.Tensor] = [indices.contiguous()]
        self._shapes: list[list[int]] = [shape]
        self._down: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._subm: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def num_voxels(self, level: int) -> int:
        return int(self._level_indices(level).shape[0])

    def subm_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        kernel_size = round(weight.shape[0] ** (1.0 / 3.0))
        key = (level, kernel_size)
        if key not in self._subm:
            indices = self._level_indices(level)
            _, pairs, pair_num = self._ops.get_indice_pairs(
                indices, self._batch_size, self._shapes[level], self._algo,
                [kernel_size] * 3, [1] * 3, [kernel_size // 2] * 3, [1] * 3, [0] * 3,
                True, False,
            )  # fmt: skip
            self._subm[key] = (pairs, pair_num)
        pairs, pair_num = self._subm[key]
        return self._conv(features, weight, pairs, pair_num, self.num_voxels(level), "subm")

    def down_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        pairs, pair_num = self._down_pairs(level)
        return self._conv(features, weight, pairs, pair_num, self.num_voxels(level + 1), "down")

    def up_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        pairs, pair_num = self._down_pairs(level)
        return self._conv(features, weight, pairs, pair_num, self.num_voxels(level), "up")

    def _conv(self, features: torch.Tensor, weight: torch.Tensor, pairs: torch.Tensor,
              pair_num: torch.Tensor, num_out: int, kind: str) -> torch.Tensor:
        spconv_weight = _spconv_weight(weight)
        out: torch.Tensor = _SpconvConvFunction.apply(
            features.contiguous(), spconv_weight, pairs, pair_num, num_out, kind, self._ops,
            self._algo,
        )
        return out

    def _level_indices(self, level: int) -> torch.Tensor:
        if not 0 <= level < self.num_levels:
            raise ValueError(f"level must be in [0, {self.num_levels}), got {level}")
        while len(self._indices) <= level:
            self._down_pairs(len(self._indices) - 1)
        return self._indices[level]

    def _down_pairs(self, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        if level not in self._down:
            if not 0 <= level < self.num_levels - 1:
                raise ValueError(f"no level below {level}: the pyramid has {self.num_levels}")
            indices = self._level_indices(level)
            out_indices, pairs, pair_num = self._ops.get_indice_pairs(
                indices, self._batch_size, self._shapes[level], self._algo,
                [2] * 3, [2] * 3, [0] * 3, [1] * 3, [0] * 3, False, False,
            )  # fmt: skip
            self._down[level] = (pairs, pair_num)
            if len(self._indices) == level + 1:
                self._indices.append(out_indices)
                self._shapes.append([s // 2 for s in self._shapes[level]])
        return self._down[level]


def _spconv_weight(weight: torch.Tensor) -> torch.Tensor:
    volume, in_channels, out_channels = weight.shape
    kernel_size = round(volume ** (1.0 / 3.0))
    shape = (out_channels, kernel_size, kernel_size, kernel_size, in_channels)
    return weight.permute(2, 0, 1).reshape(shape).contiguous()


@contextlib.contextmanager
def _kernel_threads(device: torch.device) -> Iterator[None]:
    """One intra-op thread while spconv's CPU kernels run (see the module doc), then back."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _SpconvConvFunction(torch.autograd.Function):
    """spconv's convolution ops (forward and backward) under the CPU thread guard.

    ``kind`` is ``subm``, ``down`` (strided) or ``up`` (inverse of a strided map).
    """

    @staticmethod
    def forward(
        ctx: Any, features: torch.Tensor, weight: torch.Tensor, pairs: torch.Tensor,
        pair_num: torch.Tensor, num_out: int, kind: str, ops: ModuleType, algo: Any,
    ) -> torch.Tensor:
        ctx.save_for_backward(features, weight, pairs, pair_num)
        ctx.kind, ctx.ops, ctx.algo = kind, ops, algo
        with _kernel_threads(features.device):
            out: torch.Tensor = ops.indice_conv(
                features, weight, pairs, pair_num, num_out, kind == "up", kind == "subm",
                algo=algo,
            )
        return out

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None, None, None, None, None, None]:
        features, weight, pairs, pair_num = ctx.saved_tensors
        with _kernel_threads(features.device):
            grad_features, grad_weight = ctx.ops.indice_conv_backward(
                features, weight, grad_out.contiguous(), pairs, pair_num, ctx.kind == "up",
                ctx.kind == "subm", algo=ctx.algo,
            )
        return grad_features, grad_weight, None, None, None, None, None, None
