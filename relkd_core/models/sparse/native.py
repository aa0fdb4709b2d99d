"""Sparse convolution in plain PyTorch: hashing by sorting, kernel maps, gather–GEMM–scatter.

The functions here need no compiled code, so they run wherever torch runs (CPU, CUDA) and never
break on a new torch: they are the *reference*. On CPU the geometry of ``backend: native`` also
uses an optional compiled fast path (``native_fast``: neighbour tables, a fused convolution for
the submanifold and the stride-2 convolutions, the next pyramid level by a hash) when it can be
built, and falls back to the reference (one log line) when it cannot; ``backend: native-ref``
always runs the reference. Both give the same outputs and gradients up to float rounding (parity
tests).

- Voxels are packed into one int64 key each (mixed radix over batch, x, y, z, with a margin
  of ``_pad()`` cells so a neighbour offset never wraps into another row or scan). Keys are sorted
  once per level and neighbours are found with ``searchsorted``.
- A submanifold kernel map lists, per kernel offset d, the pairs (input row, output row) with
  ``input = output + d``. The pairs of -d are those of d swapped, so only half the offsets are
  searched; the centre offset is the identity and becomes one plain matrix product.
- The coarser level is ``unique(floor(c / 2))``; its map needs no search: every voxel has one
  parent and one child offset. The transposed convolution reuses the same map.
- The convolutions are custom autograd Functions that save only the input features and the
  weight, and gather again in backward: saving every gathered (pairs, C) block would cost about
  ten times the features' memory per layer.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from relkd_core.models.sparse import native_fast
from relkd_core.models.sparse.base import SparseGeometry, check_coords

__all__ = [
    "KernelMap",
    "NativeGeometry",
    "build_geometry",
    "build_reference_geometry",
    "coarser_level",
    "down_forward",
    "grid_layout",
    "pack_keys",
    "sort_keys",
    "subm_forward",
    "submanifold_pairs",
    "up_forward",
]


def _pad() -> int:
    """Cells of margin around the occupied extent in the packed keys: enough for kernels up to 5.

    (A function, not a module constant: TorchScript cannot read module-level numbers.)
    """
    return 2

# The compiled convolution keeps a row's partial sums in registers and beats gather–GEMM–scatter
# up to about 192 × 128 channels (measured on one core on the bench scans' pyramids: 0.8–0.9×
# the reference's time at 128 × 128 and 192 × 128, about even at 256 × 128, 1.1–1.2× at
# 128 × 256); wider layers (256 × 256: 1.4–1.7×) run the reference, whose per-offset products
# are large GEMMs.
_FAST_MAX_WEIGHT_BLOCK = 192 * 128

# A kernel map: per kernel offset, (input rows, output rows), None for the centre (identity).
KernelMap = list[tuple[torch.Tensor, torch.Tensor] | None]


def build_geometry(coords: torch.Tensor, num_levels: int) -> NativeGeometry:
    """Geometry of (V, 4) int64 ``(batch, a, b, c)`` voxel coordinates over ``num_levels``,
    with the compiled fast path where it is available (``backend: native``)."""
    return NativeGeometry(coords, num_levels)


def build_reference_geometry(coords: torch.Tensor, num_levels: int) -> NativeGeometry:
    """The same geometry on the pure-PyTorch reference path only (``backend: native-ref``)."""
    return NativeGeometry(coords, num_levels, fast=False)


@dataclasses.dataclass(frozen=True)
class _Level:
    coords: torch.Tensor  # (V, 4) int64, spatial columns shifted to >= 0
    keys: torch.Tensor  # (V,) int64 packed keys, in level order
    sorted_keys: torch.Tensor  # (V,) ascending
    sort_order: torch.Tensor | None  # level rows of sorted_keys; None when keys are sorted


@dataclasses.dataclass(frozen=True)
class _DownMap:
    child_order: torch.Tensor  # (V_l,) rows of level l, grouped by child offset k = 0..7
    parent: torch.Tensor  # (V_l,) row of level l+1 of each voxel in child_order
    counts: list[int]  # voxels per child offset (8 numbers)


class NativeGeometry(SparseGeometry):
    """Voxel pyramid and kernel maps of one coordinate set, built lazily and cached.

    ``fast``: use the compiled kernels (``native_fast``) for submanifold convolutions of
    float32/float64 CPU features when they can be built; False runs the reference only.
    """

    def __init__(self, coords: torch.Tensor, num_levels: int, *, fast: bool = True) -> None:
        super().__init__(num_levels)
        check_coords(coords)
        self.fast = fast and coords.device.type == "cpu"
        shifted, self._sizes = grid_layout(coords, num_levels)
        keys = pack_keys(shifted, self._sizes)
        # Level 0 is sorted for the reference's binary search only when that search runs.
        self._levels: list[_Level] = [_Level(shifted, keys, keys, None)]
        self._level0_sorted = False
        self._down: dict[int, _DownMap] = {}
        self._subm: dict[tuple[int, int], KernelMap] = {}
        self._tables: dict[tuple[int, int], torch.Tensor] = {}
        self._stride_tables: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def num_voxels(self, level: int) -> int:
        return int(self._level(level).coords.shape[0])

    def subm_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        features, weight = _autocast_inputs(features, weight)
        with _no_autocast(features):
            return self._subm_conv(level, features, weight)

    def _subm_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor
                   ) -> torch.Tensor:
        kernel_size = round(weight.shape[0] ** (1.0 / 3.0))
        ops = self._fast_ops(features, weight)
        if ops is not None:
            table = self.neighbor_table(level, kernel_size, ops)
            if _needs_autograd(features, weight):
                pairs_of = functools.partial(self._subm_map, level, kernel_size)
                fast_out: torch.Tensor = _FastSubmConvFunction.apply(
                    features, weight, table, pairs_of, ops)
                return fast_out
            return native_fast.subm_conv(ops, features, weight, table)
        pairs = self._subm_map(level, kernel_size)
        if _needs_autograd(features, weight):
            out: torch.Tensor = _SubmConvFunction.apply(features, weight, pairs)
            return out
        return subm_forward(features, weight, pairs)

    def subm_conv_epilogue(self, level: int, features: torch.Tensor, weight: torch.Tensor,
                           bias: torch.Tensor, residual: torch.Tensor | None = None,
                           relu: bool = False) -> torch.Tensor:
        """Inference only (no autograd): ``subm_conv`` + ``bias`` (+ ``residual``), then a
        ReLU if ``relu``; one pass over the output on the compiled path."""
        kernel_size = round(weight.shape[0] ** (1.0 / 3.0))
        ops = self._fast_ops(features, weight)
        if ops is not None:
            table = self.neighbor_table(level, kernel_size, ops)
            return native_fast.subm_conv(ops, features, weight, table, bias, residual, relu)
        out = subm_forward(features, weight, self._subm_map(level, kernel_size)).add_(bias)
        if residual is not None:
            out.add_(residual)
        return out.relu_() if relu else out

    def down_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        features, weight = _autocast_inputs(features, weight)
        with _no_autocast(features):
            return self._stride_conv(level, features, weight, up=False)

    def up_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        features, weight = _autocast_inputs(features, weight)
        with _no_autocast(features):
            return self._stride_conv(level, features, weight, up=True)

    def stride_conv_epilogue(self, level: int, features: torch.Tensor, weight: torch.Tensor,
                             bias: torch.Tensor, *, up: bool) -> torch.Tensor:
        """Inference only (no autograd): ``up_conv`` if ``up`` else ``down_conv``, plus
        ``bias``, then a ReLU; one pass over the output on the compiled path."""
        ops = self._fast_ops(features, weight)
        if ops is not None:
            return native_fast.subm_conv(ops, features, weight, self.stride_table(level, up)[0],
                                         bias, None, True)
        return self._stride_conv(level, features, weight, up=up).add_(bias).relu_()

    def _stride_conv(self, level: int, features: torch.Tensor, weight: torch.Tensor, *,
                     up: bool) -> torch.Tensor:
        down = self._down_map(level)
        autograd = _needs_autograd(features, weight)
        ops = self._fast_ops(features, weight)
        if ops is not None:
            table, transposed = self.stride_table(level, up)
            if autograd:
                # Weight gradient rows: (input rows, output rows), grouped by child offset.
                rows = (down.parent, down.child_order) if up else (down.child_order, down.parent)
                fast_out: torch.Tensor = _FastStrideConvFunction.apply(
                    features, weight, table, transposed, rows, down.counts, ops)
                return fast_out
            return native_fast.subm_conv(ops, features, weight, table)
        out: torch.Tensor
        if up:
            if autograd:
                out = _UpConvFunction.apply(features, weight, down)
                return out
            return up_forward(features, weight, down.child_order, down.parent, down.counts)
        num_out = self.num_voxels(level + 1)
        if autograd:
            out = _DownConvFunction.apply(features, weight, down, num_out)
            return out
        return down_forward(features, weight, down.child_order, down.parent, down.counts,
                            num_out)

    # --- maps (cached; built by the free functions below) --------------------------------

    def _level(self, level: int) -> _Level:
        if not 0 <= level < self.num_levels:
            raise ValueError(f"level must be in [0, {self.num_levels}), got {level}")
        while len(self._levels) <= level:
            self._down_map(len(self._levels) - 1)
        return self._levels[level]

    def _down_map(self, level: int) -> _DownMap:
        if level in self._down:
            return self._down[level]
        if not 0 <= level < self.num_levels - 1:
            raise ValueError(f"no level below {level}: the pyramid has {self.num_levels} levels")
        fine = self._level(level).coords
        ops = native_fast.fast_ops() if self.fast else None
        if ops is not None:
            child_order, parent, counts, coarse, coarse_keys = native_fast.coarsen(
                ops, fine, self._sizes, _pad())
        else:
            child_order, parent, counts, coarse, coarse_keys = coarser_level(fine, self._sizes)
        down = _DownMap(child_order, parent, counts)
        self._down[level] = down
        if len(self._levels) == level + 1:
            self._levels.append(_Level(coarse, coarse_keys, coarse_keys, None))
        return down

    def _subm_map(self, level: int, kernel_size: int) -> KernelMap:
        cached = self._subm.get((level, kernel_size))
        if cached is not None:
            return cached
        table = self._tables.get((level, kernel_size))
        if table is not None:  # the fast path built the map already: read the pairs off it
            pairs = pairs_from_table(table)
        else:
            data = self._level(level)
            if level == 0 and not self._level0_sorted:
                data = _Level(data.coords, data.keys, *sort_keys(data.keys))
                self._levels[0] = data
                self._level0_sorted = True
            pairs = submanifold_pairs(data.keys, data.sorted_keys, data.sort_order,
                                      self._sizes, kernel_size)
        self._subm[(level, kernel_size)] = pairs
        return pairs

    # --- compiled fast path ---------------------------------------------------------------

    def _fast_ops(self, features: torch.Tensor, weight: torch.Tensor) -> Any | None:
        if not self.fast or not native_fast.supports(features):
            return None
        if weight.shape[1] * weight.shape[2] > _FAST_MAX_WEIGHT_BLOCK:
            return None  # wide layers: the reference's large GEMMs are faster
        ops = native_fast.fast_ops()
        if ops is None:
            self.fast = False
        return ops

    def stride_tables(self, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The stride-2 map between ``level`` and ``level + 1`` as two neighbour tables of the
        compiled convolution, both over the 8 child offsets (cached): (V_{l+1}, 8) the child
        row of each coarse voxel, and (V_l, 8) the parent row of each fine voxel at its own
        offset (-1 elsewhere). Each is the other's transpose."""
        cached = self._stride_tables.get(level)
        if cached is not None:
            return cached
        down = self._down_map(level)
        ops = native_fast.fast_ops() if self.fast else None
        if ops is not None:
            down_table, up_table = native_fast.stride_tables(
                ops, down.child_order, down.parent, down.counts, self.num_voxels(level + 1))
        else:
            offsets = torch.repeat_interleave(torch.arange(8), torch.tensor(down.counts))
            down_table = torch.full((self.num_voxels(level + 1), 8), -1, dtype=torch.int32)
            down_table[down.parent, offsets] = down.child_order.int()
            up_table = torch.full((self.num_voxels(level), 8), -1, dtype=torch.int32)
            up_table[down.child_order, offsets] = down.parent.int()
        self._stride_tables[level] = (down_table, up_table)
        return down_table, up_table

    def stride_table(self, level: int, up: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The table an ``up_conv`` (``up``) or ``down_conv`` at ``level`` runs over, and its
        transpose (that of the other direction), from ``stride_tables``."""
        down_table, up_table = self.stride_tables(level)
        return (up_table, down_table) if up else (down_table, up_table)

    def neighbor_table(self, level: int, kernel_size: int, ops: Any) -> torch.Tensor:
        """(V_level, K³) int32 neighbour table of the compiled path (cached)."""
        cached = self._tables.get((level, kernel_size))
        if cached is not None:
            return cached
        deltas = torch.tensor(kernel_deltas(self._sizes, kernel_size), dtype=torch.int64)
        table = native_fast.neighbor_table(ops, self._level(level).keys, deltas)
        self._tables[(level, kernel_size)] = table
        return table


# --- kernel maps ----------------------------------------------------------------------------
# These functions (and the forward convolutions further down) are written in the TorchScript
# subset: the exported student (relkd_core.models.export) compiles them as they are.


def grid_layout(coords: torch.Tensor, num_levels: int) -> tuple[torch.Tensor, list[int]]:
    """Coordinates with the spatial columns shifted to >= 0, and the key radix per axis.

    The shift is a multiple of 2^(levels-1), so ``floor(c / 2^l)`` groups voxels as before;
    the radix (x, y, z) adds ``_pad()`` cells on each side so no neighbour offset wraps.
    """
    step = 1 << max(num_levels - 1, 0)
    num_batches = 1
    extent: list[int] = [1, 1, 1]
    low = coords.new_zeros(3)
    if coords.shape[0] > 0:
        low = torch.div(coords[:, 1:].min(dim=0).values, step, rounding_mode="floor") * step
        span: list[int] = (coords[:, 1:].max(dim=0).values - low + 1).tolist()
        extent = span
        num_batches = int(coords[:, 0].max()) + 1
    sizes = [int(e) + 2 * _pad() for e in extent]
    if float(num_batches) * float(sizes[0]) * float(sizes[1]) * float(sizes[2]) >= 2.0**62:
        raise ValueError(
            f"voxel extent {extent} x {num_batches} scans is too large for int64 keys; "
            "use larger voxels or fewer scans per batch"
        )
    shifted = coords.clone()
    shifted[:, 1:] -= low
    return shifted, sizes


def pack_keys(coords: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """One int64 key per (V, 4) shifted coordinate row, ordered as the rows sort."""
    pad = _pad()
    keys = (coords[:, 0] * sizes[0] + coords[:, 1] + pad) * sizes[1] + coords[:, 2] + pad
    return keys * sizes[2] + coords[:, 3] + pad


def sort_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``keys`` ascending and the rows that sort them (None when already sorted).

    Batches from voxelize_batch arrive sorted: searching them needs no permutation.
    """
    if keys.shape[0] < 2 or bool((keys[1:] > keys[:-1]).all()):
        return keys, None
    ordered, order = torch.sort(keys)
    return ordered, order


def coarser_level(
    fine: torch.Tensor, sizes: list[int]
) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor, torch.Tensor]:
    """The next level of a pyramid, from its (V, 4) shifted coordinates ``fine``.

    Returns ``child_order`` (fine rows grouped by child offset ``k = 0..7``), ``parent`` (the
    coarse row of each of them), ``counts`` (rows per child offset), and the coarse level's
    coordinates and keys (sorted, since ``torch.unique`` sorts them).
    """
    parent_coords = fine.clone()
    parent_coords[:, 1:] = torch.div(fine[:, 1:], 2, rounding_mode="floor")
    unique_keys, inverse = torch.unique(pack_keys(parent_coords, sizes), sorted=True,
                                        return_inverse=True)
    coarse = parent_coords.new_empty((unique_keys.shape[0], 4))
    coarse[inverse] = parent_coords  # every parent row written by one of its children
    child = fine[:, 1:] - 2 * parent_coords[:, 1:]
    offset = child[:, 0] + 2 * child[:, 1] + 4 * child[:, 2]
    child_order = torch.argsort(offset, stable=True)
    counts: list[int] = torch.bincount(offset, minlength=8).tolist()
    return child_order, inverse[child_order], counts, coarse, unique_keys


def submanifold_pairs(
    keys: torch.Tensor, sorted_keys: torch.Tensor, sort_order: torch.Tensor | None,
    sizes: list[int], kernel_size: int,
) -> KernelMap:
    """Kernel map of an odd ``kernel_size``: per offset k, (input rows, output rows).

    The centre entry is None (the identity). The pairs of -d are those of d swapped, so only
    half the offsets are searched.
    """
    if kernel_size % 2 != 1 or kernel_size > 2 * _pad() + 1:
        raise ValueError(f"submanifold kernels must be odd and <= 5, got {kernel_size}")
    volume = kernel_size * kernel_size * kernel_size
    centre = volume // 2
    pairs: KernelMap = [None for _ in range(volume)]
    num_rows = keys.shape[0]
    radius = kernel_size // 2
    for k in range(centre):  # the mirror offset volume-1-k is -d: its pairs come free
        dx = k % kernel_size - radius
        dy = (k // kernel_size) % kernel_size - radius
        dz = k // (kernel_size * kernel_size) - radius
        delta = (dx * sizes[1] + dy) * sizes[2] + dz
        in_rows = keys
        out_rows = keys
        if num_rows > 0:
            query = keys + delta
            position = torch.searchsorted(sorted_keys, query).clamp_(max=num_rows - 1)
            out_rows = torch.nonzero(sorted_keys[position] == query).squeeze(1)
            in_rows = position[out_rows]
            if sort_order is not None:
                in_rows = sort_order[in_rows]
        pairs[k] = (in_rows, out_rows)
        pairs[volume - 1 - k] = (out_rows, in_rows)
    return pairs


def kernel_deltas(sizes: list[int], kernel_size: int) -> list[int]:
    """Packed-key difference of every offset of an odd kernel (x fastest, see ``base``)."""
    radius = kernel_size // 2
    deltas: list[int] = []
    for k in range(kernel_size**3):
        dx = k % kernel_size - radius
        dy = (k // kernel_size) % kernel_size - radius
        dz = k // (kernel_size * kernel_size) - radius
        deltas.append((dx * sizes[1] + dy) * sizes[2] + dz)
    return deltas


def pairs_from_table(table: torch.Tensor) -> KernelMap:
    """The kernel map (per offset: input rows, output rows) of a (V, K) neighbour table."""
    volume = table.shape[1]
    columns = table.T
    offset, out_rows = torch.nonzero(columns >= 0, as_tuple=True)
    in_rows = columns[offset, out_rows].long()
    counts: list[int] = torch.bincount(offset, minlength=volume).tolist()
    pairs: KernelMap = []
    for k, (ins, outs) in enumerate(zip(torch.split(in_rows, counts),
                                        torch.split(out_rows, counts), strict=True)):
        pairs.append(None if k == volume // 2 else (ins, outs))
    return pairs


def _autocast_inputs(features: torch.Tensor, weight: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Under autocast (AMP), features and weight in its lower precision, as torch's own
    products get them (the weight's gradient flows back to float32); otherwise unchanged."""
    device = features.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        return features.to(dtype), weight.to(dtype)
    return features, weight


def _no_autocast(features: torch.Tensor) -> torch.autocast:
    """The convolution's own products run in the dtype their inputs already have."""
    return torch.autocast(features.device.type, enabled=False)


def _needs_autograd(features: torch.Tensor, weight: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (features.requires_grad or weight.requires_grad)


# --- submanifold convolution ------------------------------------------------------------------


def subm_forward(
    features: torch.Tensor, weight: torch.Tensor,
    pairs: KernelMap,
) -> torch.Tensor:
    """Submanifold convolution of (V, C_in) ``features`` over a kernel map (no autograd)."""
    out = features @ weight[len(pairs) // 2]
    step = _chunk_rows(features, weight)
    gathered = features.new_empty((step, features.shape[1]))
    products = features.new_empty((step, weight.shape[2]))
    for k, in_rows, out_rows in _chunks(pairs, step):
        count = in_rows.shape[0]
        torch.index_select(features, 0, in_rows, out=gathered[:count])
        torch.mm(gathered[:count], weight[k], out=products[:count])
        _add_rows(out, out_rows, products[:count])
    return out


def _chunk_rows(features: torch.Tensor, weight: torch.Tensor) -> int:
    """Pairs per gather–GEMM–scatter chunk: about 1.5 MiB of the wider side.

    Gathering, multiplying and adding back a whole offset at once streams every block through
    main memory; chunks this size stay in the core's cache, and the buffers shrink to one
    chunk.
    """
    width = max(features.shape[1], weight.shape[1], weight.shape[2], 1)
    return max(512, (3 << 19) // (features.element_size() * width))


def _chunks(
    pairs: KernelMap, step: int
) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(offset k, input rows, output rows) in chunks of at most ``step`` pairs, centre excluded."""
    centre = len(pairs) // 2
    chunks: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    for k in range(len(pairs)):
        pair = pairs[k]
        if pair is not None and k != centre:
            in_rows, out_rows = pair
            for start in range(0, in_rows.shape[0], step):
                chunks.append((k, in_rows[start : start + step], out_rows[start : start + step]))
    return chunks


def _add_rows(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``target[rows] += values`` with repeated rows summed; in place, returns ``target``.

    ``index_add_`` rather than ``index_put_(accumulate=True)``, which is about 10× slower on
    CPU; ``scatter_add_`` with a broadcast index is no faster and showed rare long stalls.
    """
    return target.index_add_(0, rows, values)


class _SubmConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, features: torch.Tensor, weight: torch.Tensor, pairs: KernelMap
    ) -> torch.Tensor:
        ctx.save_for_backward(features, weight)
        ctx.pairs = pairs
        return subm_forward(features, weight, pairs)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        features, weight = ctx.saved_tensors
        pairs: KernelMap = ctx.pairs
        need_features, need_weight = ctx.needs_input_grad[:2]
        grad_out = grad_out.contiguous()
        centre = len(pairs) // 2
        grad_features = grad_out @ weight[centre].T if need_features else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        if grad_weight is not None:
            torch.mm(features.T, grad_out, out=grad_weight[centre])
        step = _chunk_rows(features, weight)
        grad_rows = grad_out.new_empty((step, grad_out.shape[1]))
        buffer = features.new_empty((step, features.shape[1]))  # products, then inputs
        for k, in_rows, out_rows in _chunks(pairs, step):
            count = in_rows.shape[0]
            grad_k = torch.index_select(grad_out, 0, out_rows, out=grad_rows[:count])
            if grad_features is not None:
                torch.mm(grad_k, weight[k].T, out=buffer[:count])
                _add_rows(grad_features, in_rows, buffer[:count])
            if grad_weight is not None:
                inputs = torch.index_select(features, 0, in_rows, out=buffer[:count])
                grad_weight[k].addmm_(inputs.T, grad_k)
        return grad_features, grad_weight, None


class _FastSubmConvFunction(torch.autograd.Function):
    """The compiled submanifold convolution with its gradients.

    The input gradient is the same fused kernel over the same table: for a centred kernel,
    ``table[o, k] = i`` exactly when ``table[i, K-1-k] = o``, so it is a convolution of the
    output gradient with the weights mirrored and transposed. The weight gradient runs over the
    kernel map (pairs per offset) read off the table, as in the reference.
    """

    @staticmethod
    def forward(
        ctx: Any, features: torch.Tensor, weight: torch.Tensor, table: torch.Tensor,
        pairs_of: Callable[[], KernelMap], ops: Any,
    ) -> torch.Tensor:
        ctx.save_for_backward(features, weight)
        ctx.table, ctx.pairs_of, ctx.ops = table, pairs_of, ops
        return native_fast.subm_conv(ops, features, weight, table)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        features, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_features = grad_weight = None
        if ctx.needs_input_grad[0]:
            mirrored = weight.flip(0).transpose(1, 2).contiguous()
            grad_features = native_fast.subm_conv(ctx.ops, grad_out, mirrored, ctx.table)
        if ctx.needs_input_grad[1]:
            grad_weight = _subm_weight_grad(features, grad_out, ctx.pairs_of(), weight)
        return grad_features, grad_weight, None, None, None


def _subm_weight_grad(features: torch.Tensor, grad_out: torch.Tensor, pairs: KernelMap,
                      weight: torch.Tensor) -> torch.Tensor:
    """Sum over each offset's pairs of ``features[in]ᵀ grad_out[out]``, (K, C_in, C_out)."""
    centre = len(pairs) // 2
    grad_weight = torch.zeros_like(weight)
    torch.mm(features.T, grad_out, out=grad_weight[centre])
    step = _chunk_rows(features, weight)
    grad_rows = grad_out.new_empty((step, grad_out.shape[1]))
    inputs = features.new_empty((step, features.shape[1]))
    for k, in_rows, out_rows in _chunks(pairs, step):
        count = in_rows.shape[0]
        grad_k = torch.index_select(grad_out, 0, out_rows, out=grad_rows[:count])
        gathered = torch.index_select(features, 0, in_rows, out=inputs[:count])
        grad_weight[k].addmm_(gathered.T, grad_k)
    return grad_weight


# --- strided convolution and its transpose ------------------------------------------------------


def _grouped_mm(inputs: torch.Tensor, weight: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Rows grouped by kernel offset (``counts`` rows each) times their offset's weight."""
    parts = torch.split(inputs, counts)
    products: list[torch.Tensor] = []
    for k in range(len(parts)):
        products.append(parts[k] @ weight[k])
    return torch.cat(products)


def _grouped_weight_grad(
    inputs: torch.Tensor, grad: torch.Tensor, counts: list[int], like: torch.Tensor
) -> torch.Tensor:
    grad_weight = torch.zeros_like(like)
    starts = [0]
    for count in counts:
        starts.append(starts[-1] + count)
    for k, count in enumerate(counts):
        if count:
            rows = slice(starts[k], starts[k + 1])
            torch.mm(inputs[rows].T, grad[rows], out=grad_weight[k])
    return grad_weight


def down_forward(
    features: torch.Tensor, weight: torch.Tensor, child_order: torch.Tensor,
    parent: torch.Tensor, counts: list[int], num_out: int,
) -> torch.Tensor:
    """Stride-2 convolution over a ``coarser_level`` map (no autograd)."""
    products = _grouped_mm(features.index_select(0, child_order), weight, counts)
    out = products.new_zeros((num_out, weight.shape[2]))
    return _add_rows(out, parent, products)


def up_forward(
    features: torch.Tensor, weight: torch.Tensor, child_order: torch.Tensor,
    parent: torch.Tensor, counts: list[int],
) -> torch.Tensor:
    """Transposed stride-2 convolution over a ``coarser_level`` map (no autograd)."""
    products = _grouped_mm(features.index_select(0, parent), weight, counts)
    out = products.new_empty((products.shape[0], weight.shape[2]))
    out[child_order] = products
    return out


class _FastStrideConvFunction(torch.autograd.Function):
    """A stride-2 convolution or its transpose on the compiled convolution, with gradients.

    ``table`` is the direction run (``stride_tables``), ``transposed`` the other one: the
    input gradient is the convolution of the output gradient with each offset's weight
    transposed over ``transposed`` (no mirroring: both tables index the same child offset).
    The weight gradient is the reference's, over ``rows`` (input rows, output rows) grouped
    by child offset, ``counts`` rows per offset.
    """

    @staticmethod
    def forward(
        ctx: Any, features: torch.Tensor, weight: torch.Tensor, table: torch.Tensor,
        transposed: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor], counts: list[int],
        ops: Any,
    ) -> torch.Tensor:
        ctx.save_for_backward(features, weight)
        ctx.transposed, ctx.rows, ctx.counts, ctx.ops = transposed, rows, counts, ops
        return native_fast.subm_conv(ops, features, weight, table)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None, None, None]:
        features, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_features = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_features = native_fast.subm_conv(
                ctx.ops, grad_out, weight.transpose(1, 2).contiguous(), ctx.transposed)
        if ctx.needs_input_grad[1]:
            in_rows, out_rows = ctx.rows
            grad_weight = _grouped_weight_grad(features.index_select(0, in_rows),
                                               grad_out.index_select(0, out_rows), ctx.counts,
                                               weight)
        return grad_features, grad_weight, None, None, None, None, None


class _DownConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, features: torch.Tensor, weight: torch.Tensor, down: _DownMap, num_out: int
    ) -> torch.Tensor:
        ctx.save_for_backward(features, weight)
        ctx.down = down
        return down_forward(features, weight, down.child_order, down.parent, down.counts,
                            num_out)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        features, weight = ctx.saved_tensors
        down: _DownMap = ctx.down
        grad_rows = grad_out.contiguous().index_select(0, down.parent)
        grad_features = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_sorted = _grouped_mm(grad_rows, weight.transpose(1, 2), down.counts)
            grad_features = torch.empty_like(features)
            grad_features[down.child_order] = grad_sorted
        if ctx.needs_input_grad[1]:
            inputs = features.index_select(0, down.child_order)
            grad_weight = _grouped_weight_grad(inputs, grad_rows, down.counts, weight)
        return grad_features, grad_weight, None, None


class _UpConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, features: torch.Tensor, weight: torch.Tensor, down: _DownMap
    ) -> torch.Tensor:
        ctx.save_for_backward(features, weight)
        ctx.down = down
        return up_forward(features, weight, down.child_order, down.parent, down.counts)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        features, weight = ctx.saved_tensors
        down: _DownMap = ctx.down
        grad_rows = grad_out.contiguous().index_select(0, down.child_order)
        grad_features = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_sorted = _grouped_mm(grad_rows, weight.transpose(1, 2), down.counts)
            grad_features = features.new_zeros(features.shape)
            _add_rows(grad_features, down.parent, grad_sorted)
        if ctx.needs_input_grad[1]:
            inputs = features.index_select(0, down.parent)
            grad_weight = _grouped_weight_grad(inputs, grad_rows, down.counts, weight)
        return grad_features, grad_weight, None

