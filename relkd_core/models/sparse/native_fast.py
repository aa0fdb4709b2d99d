"""The compiled fast path of the ``native`` backend: built on first use, optional.

``native_fast.cpp`` holds two CPU kernels: a neighbour table (the kernel map of a submanifold
convolution as a (V, K³) int32 table, -1 where a neighbour is absent; a merge walk over
ascending keys, a hash otherwise; a centred kernel looks up half the offsets and mirrors them)
and a fused gather–GEMM–scatter convolution over such a table (every output row accumulates its
neighbours' products in registers: no gathered blocks, no scatter-add). The stride-2 convolution
and its transpose run on the same convolution, over (V, 8) tables of child offsets
(``NativeGeometry.stride_tables``, themselves written by ``stride_tables``). Two more replace
sorts of every point or voxel by a hash, with the reference's exact outputs: the next pyramid
level (``coarsen``) and Cartesian voxelization (``voxelize``, used by ``voxelize_batch`` for
``backend: native``). ``best_match`` is the labelling head's last step in one pass per voxel:
the folded head's product, the cosines and their maximum (``relkd_core.models.inference``; its
PyTorch reference is ``_head_cosines``). It is compiled
with ``torch.utils.cpp_extension`` the first time a process needs it and cached on disk by torch
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); later processes load the
cached library in well under a second.

``python -m relkd_core.models.sparse.build`` builds it ahead (``make install`` does), so
that no later process, a robot's node least of all, pays the build on its first scan.

When it cannot be built or loaded (no C++ compiler or ninja, a failed build, a torch without
headers) :func:`fast_ops` logs one line and returns None, and the backend runs the pure-PyTorch
reference (``native.py``), which is also what ``backend: native-ref`` always runs. The kernels
handle float32 and float64 on CPU; other dtypes and devices take the reference path.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["CFLAGS", "LDFLAGS", "SOURCE", "HeadTerms", "best_match", "coarsen", "disabled",
           "fast_ops", "neighbor_table", "stride_tables", "subm_conv", "voxelize"]

_LOG = logging.getLogger(__name__)

SOURCE = Path(__file__).with_suffix(".cpp")
#: The compiler and linker flags of the build (a benchmark building another revision of the
#: source uses them too).
CFLAGS = ("-O3", "-march=native", "-fopenmp")
LDFLAGS = ("-fopenmp",)
#: Dtypes the compiled convolution handles.
_DTYPES = (torch.float32, torch.float64)


def disabled() -> bool:
    """Whether ``RELKD_NATIVE_FAST=0`` turns the compiled path off for this process."""
    return os.environ.get("RELKD_NATIVE_FAST", "1") == "0"


@functools.cache
def fast_ops() -> Any | None:
    """The compiled ops (``torch.ops.relkd_native``), building them on first call; None when
    they cannot be had here (logged once)."""
    if disabled():
        return None
    compiler = os.environ.get("CXX", "c++")
    try:
        from torch.utils import cpp_extension

        if shutil.which(compiler) is None:
            raise RuntimeError(f"no C++ compiler ({compiler}) on PATH")
        if not cpp_extension.is_ninja_available():
            raise RuntimeError("ninja is not installed")
        # torch logs and warns about compilers at length; the one line below says it all.
        torch_log = logging.getLogger("torch.utils.cpp_extension")
        level = torch_log.level
        torch_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cpp_extension.load(
                    name="relkd_native_fast",
                    sources=[str(SOURCE)],
                    extra_cflags=list(CFLAGS),
                    extra_ldflags=list(LDFLAGS),
                    is_python_module=False,
                    verbose=False,
                )
        finally:
            torch_log.setLevel(level)
        ops = torch.ops.relkd_native
        ops.subm_conv  # noqa: B018 - raises here, not at the first convolution, when missing
    except Exception as err:  # no compiler or ninja, a failed build, a missing header: anything
        text = str(err).strip()
        reason = text.splitlines()[0][:160] if text else type(err).__name__
        _LOG.warning("native sparse backend: compiled fast path unavailable (%s); running the "
                     "PyTorch reference", reason)
        return None
    return ops


def supports(features: torch.Tensor) -> bool:
    """Whether the compiled convolution can take ``features`` (CPU, float32/float64)."""
    return features.device.type == "cpu" and features.dtype in _DTYPES


def neighbor_table(ops: Any, keys: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """(V, K) int32: row of ``keys[v] + deltas[k]`` among ``keys``, -1 when absent."""
    table = torch.empty((keys.shape[0], deltas.shape[0]), dtype=torch.int32)
    ops.neighbor_table(keys.contiguous(), deltas.contiguous(), table)
    return table


def subm_conv(ops: Any, features: torch.Tensor, weight: torch.Tensor, table: torch.Tensor,
              bias: torch.Tensor | None = None, residual: torch.Tensor | None = None,
              relu: bool = False) -> torch.Tensor:
    """(V, C_out) submanifold convolution of (V, C_in) ``features`` over a neighbour table,
    plus ``bias`` (C_out,) and ``residual`` (V, C_out) when given, then a ReLU if ``relu``
    (all in the one pass that writes the output)."""
    out = features.new_empty((table.shape[0], weight.shape[2]))
    ops.subm_conv(features.contiguous(), weight.contiguous(), table, out,
                  None if bias is None else bias.contiguous(),
                  None if residual is None else residual.contiguous(), relu)
    return out


def coarsen(ops: Any, fine: torch.Tensor, sizes: list[int], pad: int
            ) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor, torch.Tensor]:
    """``native.coarser_level(fine, sizes)`` (same outputs, same order) with a hash instead of
    sorting every fine voxel: ``child_order``, ``parent``, ``counts``, the coarse level's
    coordinates and its ascending keys."""
    count = fine.shape[0]
    coarse = fine.new_empty((count, 4))
    keys, order, parent = (fine.new_empty(count) for _ in range(3))
    counts = fine.new_empty(8)
    num_coarse = int(ops.coarsen(fine.contiguous(), torch.tensor(sizes, dtype=torch.int64), pad,
                                 coarse, keys, order, parent, counts))
    return order, parent, counts.tolist(), coarse[:num_coarse].clone(), keys[:num_coarse].clone()


def stride_tables(ops: Any, child_order: torch.Tensor, parent: torch.Tensor, counts: list[int],
                  num_coarse: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``NativeGeometry.stride_tables`` from ``coarsen``'s outputs: (V_c, 8) the child row of
    each coarse voxel and (V, 8) the parent row of each fine voxel at its offset (-1 elsewhere),
    int32."""
    down = torch.empty((num_coarse, 8), dtype=torch.int32)
    up = torch.empty((child_order.shape[0], 8), dtype=torch.int32)
    ops.stride_tables(child_order.contiguous(), parent.contiguous(),
                      torch.tensor(counts, dtype=torch.int64), down, up)
    return down, up


@dataclasses.dataclass(frozen=True)
class HeadTerms:
    """The labelling head folded down to the last stage's width C_last, for C text entries
    (``relkd_core.models.inference`` makes them): ``matrix`` (C_last, C + 2 C_last + 1),
    ``offset`` (C + 2 C_last + 1,), ``text_bias`` (C,) float32 and three constants."""

    matrix: torch.Tensor
    offset: torch.Tensor
    text_bias: torch.Tensor
    f_dot_f: float
    f_gram_f: float
    b_dot_b: float


def best_match(ops: Any, hidden: torch.Tensor, terms: HeadTerms, normalize: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The best text entry (V,) int64 and its cosine (V,) float32 of every row of the (V, C_last)
    float32 ``hidden``: ``inference._head_cosines(...).max(dim=1)`` in one pass."""
    rows = hidden.shape[0]
    index = torch.empty(rows, dtype=torch.int64)
    score = torch.empty(rows, dtype=torch.float32)
    ops.best_match(hidden.contiguous(), terms.matrix.contiguous(), terms.offset.contiguous(),
                   terms.text_bias.contiguous(), normalize, terms.f_dot_f, terms.f_gram_f,
                   terms.b_dot_b, index, score)
    return index, score


#: ``StudentConfig.input_features`` -> the compiled voxelizer's mode.
_FEATURE_MODES = {"ones": 0, "intensity": 1, "xyzi": 2}


def voxelize(ops: Any, points: torch.Tensor, voxel_size_m: float, input_features: str
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Cartesian voxelization of one (N, 4) float32 CPU scan of finite points: the occupied
    cells (V, 3) int64 in lexicographic order, the cell of every point (N,), and the voxel
    features (V, C) of ``input_features``; what ``relkd_core.geometry.voxel`` gives. None when
    the cells span too much to pack (the reference then raises its error)."""
    count = points.shape[0]
    mode = _FEATURE_MODES[input_features]
    cells = torch.empty((count, 3), dtype=torch.int64)
    inverse = torch.empty(count, dtype=torch.int64)
    features = torch.empty((count, 4 if mode == 2 else 1), dtype=torch.float32)
    num_voxels = int(ops.voxelize(points.contiguous(), float(voxel_size_m), mode, cells, inverse,
                                  features))
    if num_voxels < 0:
        return None
    return cells[:num_voxels], inverse, features[:num_voxels]
