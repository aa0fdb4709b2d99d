"""MinkUNet: the 3D student, one definition over any sparse-convolution backend.

The layout is Res16UNet of the SLidR family (MinkowskiEngine's MinkUNet): a stem convolution,
four encoder stages each opened by a 2×2×2 stride-2 convolution, four decoder stages each
opened by a transposed convolution and a concatenated skip connection, then a 1×1 head.
Variants differ only in blocks per stage (two-line subclasses below). Module and parameter
names follow the SLidR checkpoints (``conv0p1s1``, ``block1.0.conv1``, ``convtr4p16s2``,
``final``...), so :func:`relkd_core.models.convert.load_minkowski_state_dict` is a renaming
and reshaping, not a guess.

Per-point output: the voxels are convolved, then every point takes the features of its voxel.

Inference (eval mode, no gradients) on the ``native`` backend folds every batch norm into the
convolution before it (running statistics: ``W·s``, ``β - μ·s`` with ``s = γ/√(σ²+ε)``), and
the bias, the residual of a block and the ReLU are added in the pass that writes the
convolution's output (``NativeGeometry.subm_conv_epilogue``); the folded weights are cached
until a parameter or statistic changes. Training and other backends run the modules as they
are.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, cast

import torch
from torch import nn
from torch.nn import functional

from relkd_core.errors import ModelError
from relkd_core.geometry.voxel import devoxelize
from relkd_core.models.batch import VoxelBatch
from relkd_core.models.config import StudentConfig
from relkd_core.models.sparse import build_geometry
from relkd_core.models.sparse.base import SparseGeometry
from relkd_core.models.sparse.native import NativeGeometry

__all__ = [
    "MinkUNet",
    "MinkUNet14",
    "MinkUNet18",
    "MinkUNet34",
    "build_student",
]

# Encoder stride-2 steps: levels 0 (input voxels) to 4 (16× coarser).
NUM_LEVELS = 5


class SubmanifoldConv(nn.Module):
    """Stride-1 sparse convolution with an odd ``kernel_size``; outputs at the input voxels.

    ``weight`` is (K³, C_in, C_out) (offset order: see ``relkd_core.models.sparse.base``).
    A 1×1×1 kernel is a plain matrix product and needs no geometry.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 bias: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(kernel_size**3, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        _init_kernel(self.weight)

    def forward(self, features: torch.Tensor, geometry: SparseGeometry | None = None,
                level: int = 0) -> torch.Tensor:
        """(V_level, C_in) float -> (V_level, C_out)."""
        if self.kernel_size == 1:
            out = features @ self.weight[0]
        elif geometry is None:
            raise ValueError("a convolution with kernel_size > 1 needs the sparse geometry")
        else:
            out = geometry.subm_conv(level, features, self.weight)
        return out if self.bias is None else out + self.bias


class Stride2Conv(nn.Module):
    """The weight (8, C_in, C_out) of a 2×2×2 stride-2 convolution or of its transpose."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(8, in_channels, out_channels))
        _init_kernel(self.weight)


class StridedConv(Stride2Conv):
    """2×2×2 stride-2 convolution from ``level`` to ``level + 1``."""

    def forward(self, features: torch.Tensor, geometry: SparseGeometry, level: int
                ) -> torch.Tensor:
        """(V_level, C_in) -> (V_{level+1}, C_out)."""
        return geometry.down_conv(level, features, self.weight)


class TransposedConv(Stride2Conv):
    """2×2×2 stride-2 transposed convolution from ``level + 1`` back onto ``level``."""

    def forward(self, features: torch.Tensor, geometry: SparseGeometry, level: int
                ) -> torch.Tensor:
        """(V_{level+1}, C_in) -> (V_level, C_out)."""
        return geometry.up_conv(level, features, self.weight)


class BatchNorm(nn.BatchNorm1d):
    """Batch norm over voxels that tolerates a single voxel in training.

    A one-point scan leaves one voxel at every level, and PyTorch refuses batch statistics of
    one value. Then (and only then) the running statistics are used, and not updated.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(V, C) -> (V, C)."""
        if self.training and features.shape[0] <= 1:
            return functional.batch_norm(features, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        return super().forward(features)


class BasicBlock(nn.Module):
    """Residual block: two 3×3×3 submanifold convolutions with batch norm and ReLU."""

    def __init__(self, in_channels: int, channels: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = SubmanifoldConv(in_channels, channels, 3)
        self.norm1 = BatchNorm(channels, momentum=bn_momentum)
        self.conv2 = SubmanifoldConv(channels, channels, 3)
        self.norm2 = BatchNorm(channels, momentum=bn_momentum)
        self.downsample: nn.Sequential | None = None
        if in_channels != channels:
            # A 1×1 projection (MinkowskiEngine's name, although nothing is downsampled here).
            self.downsample = nn.Sequential(
                SubmanifoldConv(in_channels, channels, 1),
                BatchNorm(channels, momentum=bn_momentum),
            )

    def forward(self, features: torch.Tensor, geometry: SparseGeometry, level: int
                ) -> torch.Tensor:
        """(V_level, C_in) -> (V_level, C)."""
        out = functional.relu(self.norm1(self.conv1(features, geometry, level)))
        out = self.norm2(self.conv2(out, geometry, level))
        residual = features if self.downsample is None else self.downsample(features)
        return functional.relu(out + residual)


class Stage(nn.ModuleList):
    """Blocks of one stage, run in turn at one level (a ModuleList keeps SLidR's key names)."""

    def forward(self, features: torch.Tensor, geometry: SparseGeometry, level: int
                ) -> torch.Tensor:
        """(V_level, C_in) -> (V_level, C)."""
        for block in self:
            features = block(features, geometry, level)
        return features


class MinkUNet(nn.Module):
    """Sparse residual U-Net with per-point outputs; subclasses set ``LAYERS``.

    ``forward(batch)`` maps a :class:`VoxelBatch` to (sum N_i, out_dim) per-point features in
    the order of the input points, L2-normalised when ``config.normalize_output``.
    """

    LAYERS: ClassVar[tuple[int, int, int, int, int, int, int, int]]
    PLANES: ClassVar[tuple[int, ...]] = (32, 64, 128, 256, 256, 128, 96, 96)
    INIT_DIM: ClassVar[int] = 32

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        if type(self) is MinkUNet:
            raise TypeError("MinkUNet is abstract: use build_student(config) or a variant class")
        self.config = config
        planes = [_scaled(p, config.width_multiplier) for p in self.PLANES]
        init_dim = _scaled(self.INIT_DIM, config.width_multiplier)
        momentum = config.bn_momentum
        self.conv0p1s1 = SubmanifoldConv(config.in_channels, init_dim, config.stem_kernel_size)
        self.bn0 = BatchNorm(init_dim, momentum=momentum)
        # Encoder: stride-2 convolution (keeps the width), batch norm, then a stage of blocks.
        widths = [init_dim]
        for stage in range(4):
            name = f"{stage + 1}p{2**stage}s2"
            setattr(self, f"conv{name}", StridedConv(widths[-1], widths[-1]))
            setattr(self, f"bn{stage + 1}", BatchNorm(widths[-1], momentum=momentum))
            setattr(self, f"block{stage + 1}", self._stage(widths[-1], planes[stage], stage))
            widths.append(planes[stage])
        # Decoder: transposed convolution, batch norm, concatenation with the encoder output of
        # the same level (or the stem's, last), then a stage of blocks.
        width = widths[-1]
        for stage in range(4, 8):
            name = f"{stage}p{2 ** (8 - stage)}s2"
            setattr(self, f"convtr{name}", TransposedConv(width, planes[stage]))
            setattr(self, f"bntr{stage}", BatchNorm(planes[stage], momentum=momentum))
            skip = widths[7 - stage]
            setattr(self, f"block{stage + 1}",
                    self._stage(planes[stage] + skip, planes[stage], stage))
            width = planes[stage]
        self.final = SubmanifoldConv(width, config.out_dim, 1, bias=True)

    def _stage(self, in_channels: int, channels: int, stage: int) -> Stage:
        blocks = [BasicBlock(in_channels, channels, self.config.bn_momentum)]
        blocks += [BasicBlock(channels, channels, self.config.bn_momentum)
                   for _ in range(1, self.LAYERS[stage])]
        return Stage(blocks)

    def forward(self, batch: VoxelBatch) -> torch.Tensor:
        """Per-point features (sum N_i, out_dim) of a voxelized batch; see the class doc."""
        self._check_batch(batch)
        voxel_features = self.forward_voxels(batch)
        return devoxelize(voxel_features, batch.point_to_voxel)

    def forward_voxels(self, batch: VoxelBatch, *, project: bool = True) -> torch.Tensor:
        """Per-voxel features (V, out_dim), rows in the order of ``batch.coords``. Without
        ``project``: the last stage's output (V, C_last), before the ``final`` 1×1 layer and
        the normalisation, for a caller that folds both into what follows them."""
        if batch.num_voxels == 0:
            # Nothing to convolve; the head's weight keeps the empty output in the graph.
            width = self.config.out_dim if project else self.final.weight.shape[1]
            return batch.features.new_zeros((0, width)) + self.final.weight[0, 0, 0]
        key = f"{self.config.backend}:{NUM_LEVELS}"
        geometry = batch.cache.get(key)
        if geometry is None:
            geometry = build_geometry(self.config.backend, batch.coords, NUM_LEVELS)
            batch.cache[key] = geometry
        if isinstance(geometry, NativeGeometry) and not self.training and (
                not torch.is_grad_enabled()):
            out = self.run_folded(batch.features, geometry, project=project)
        else:
            out = self.run(batch.features, geometry, project=project)
        if project and self.config.normalize_output:
            out = functional.normalize(out, p=2.0, dim=1)
        return out

    def run(self, features: torch.Tensor, geometry: SparseGeometry, *, project: bool = True
            ) -> torch.Tensor:
        """The network on level-0 voxel features (V, C_in) -> (V, out_dim), no normalisation;
        without ``project``, (V, C_last) before the ``final`` layer."""
        out = functional.relu(self.bn0(self.conv0p1s1(features, geometry, 0)))
        skips = [out]
        for stage in range(4):
            down: StridedConv = getattr(self, f"conv{stage + 1}p{2**stage}s2")
            out = functional.relu(getattr(self, f"bn{stage + 1}")(down(out, geometry, stage)))
            out = getattr(self, f"block{stage + 1}")(out, geometry, stage + 1)
            skips.append(out)
        for stage in range(4, 8):
            level = 7 - stage  # the level this decoder stage outputs at: 3, 2, 1, 0
            up: TransposedConv = getattr(self, f"convtr{stage}p{2 ** (8 - stage)}s2")
            out = functional.relu(getattr(self, f"bntr{stage}")(up(out, geometry, level)))
            out = torch.cat([out, skips[level]], dim=1)
            out = getattr(self, f"block{stage + 1}")(out, geometry, level)
        if not project:
            return out
        result: torch.Tensor = self.final(out)
        return result

    def run_folded(self, features: torch.Tensor, geometry: NativeGeometry, *,
                   project: bool = True) -> torch.Tensor:
        """``run`` in eval mode with the batch norms folded (see the module doc); no autograd."""
        folded = self._folded_weights()

        def subm(name: str, level: int, x: torch.Tensor, residual: torch.Tensor | None = None,
                 relu: bool = True) -> torch.Tensor:
            weight, bias = folded[name]
            if weight.shape[0] == 1:
                out = torch.addmm(bias, x, weight[0])
                if residual is not None:
                    out.add_(residual)
                return out.relu_() if relu else out
            return geometry.subm_conv_epilogue(level, x, weight, bias, residual, relu)

        def stage(prefix: str, x: torch.Tensor, level: int) -> torch.Tensor:
            for index, block in enumerate(getattr(self, prefix)):
                name = f"{prefix}.{index}"
                out = subm(f"{name}.conv1", level, x)
                residual = x if block.downsample is None else subm(
                    f"{name}.downsample", level, x, relu=False)
                x = subm(f"{name}.conv2", level, out, residual)
            return x

        out = subm("conv0p1s1", 0, features)
        skips = [out]
        for index in range(4):
            name = f"conv{index + 1}p{2**index}s2"
            weight, bias = folded[name]
            out = geometry.stride_conv_epilogue(index, out, weight, bias, up=False)
            out = stage(f"block{index + 1}", out, index + 1)
            skips.append(out)
        for index in range(4, 8):
            level = 7 - index
            name = f"convtr{index}p{2 ** (8 - index)}s2"
            weight, bias = folded[name]
            out = geometry.stride_conv_epilogue(level, out, weight, bias, up=True)
            out = stage(f"block{index + 1}", torch.cat([out, skips[level]], dim=1), level)
        if not project:
            return out
        weight, bias = folded["final"]
        return torch.addmm(bias, out, weight[0])

    def _folded_weights(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of every convolution with its batch norm folded in, cached until a
        parameter or running statistic changes (their version counters say when)."""
        # The module tree is fixed once built; its tensors are read off each module's own
        # dicts, which sees a parameter or buffer replaced as well as one changed in place
        # (walking the tree with parameters() took about 2 ms per scan).
        modules: list[nn.Module] | None = getattr(self, "_module_list", None)
        if modules is None:
            modules = list(self.modules())
            self._module_list = modules
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for module in modules
                    for t in (*module._parameters.values(), *module._buffers.values())
                    if t is not None)
        cached: tuple[Any, dict[str, tuple[torch.Tensor, torch.Tensor]]] | None = getattr(
            self, "_folded_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        pairs: list[tuple[str, nn.Module, nn.Module | None]] = [
            ("conv0p1s1", self.conv0p1s1, self.bn0), ("final", self.final, None)]
        for index in range(4):
            pairs.append((f"conv{index + 1}p{2**index}s2",
                          getattr(self, f"conv{index + 1}p{2**index}s2"),
                          getattr(self, f"bn{index + 1}")))
        for index in range(4, 8):
            pairs.append((f"convtr{index}p{2 ** (8 - index)}s2",
                          getattr(self, f"convtr{index}p{2 ** (8 - index)}s2"),
                          getattr(self, f"bntr{index}")))
        for stage in range(1, 9):
            for index, block in enumerate(getattr(self, f"block{stage}")):
                name = f"block{stage}.{index}"
                pairs += [(f"{name}.conv1", block.conv1, block.norm1),
                          (f"{name}.conv2", block.conv2, block.norm2)]
                if block.downsample is not None:
                    pairs.append((f"{name}.downsample", block.downsample[0],
                                  block.downsample[1]))
        with torch.no_grad():
            folded = {name: _fold(conv, norm) for name, conv, norm in pairs}
        self._folded_cache = (key, folded)
        return folded

    def _check_batch(self, batch: VoxelBatch) -> None:
        if not isinstance(batch, VoxelBatch):
            raise ModelError(
                f"MinkUNet expects a VoxelBatch from voxelize_batch(scans, config), got "
                f"{type(batch).__name__}"
            )
        expected = self.config.in_channels
        if batch.features.ndim != 2 or batch.features.shape[1] != expected:
            raise ModelError(
                f"batch.features: expected (V, {expected}) for input_features="
                f"{self.config.input_features!r}, got {tuple(batch.features.shape)}; voxelize "
                "with the model's own config"
            )
        weight = self.final.weight
        if batch.features.dtype != weight.dtype or batch.features.device != weight.device:
            raise ModelError(
                f"batch is {batch.features.dtype} on {batch.features.device} but the model is "
                f"{weight.dtype} on {weight.device}; pass device= to voxelize_batch or move "
                "the model"
            )


class MinkUNet14(MinkUNet):
    LAYERS = (1, 1, 1, 1, 1, 1, 1, 1)


class MinkUNet18(MinkUNet):
    LAYERS = (2, 2, 2, 2, 2, 2, 2, 2)


class MinkUNet34(MinkUNet):
    LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)


VARIANTS: dict[str, type[MinkUNet]] = {"14": MinkUNet14, "18": MinkUNet18, "34": MinkUNet34}


def build_student(config: StudentConfig) -> MinkUNet:
    """The MinkUNet ``config`` describes, randomly initialised, on CPU in float32.

    Raises ModelError when ``config.backend`` is not installed (checked now, not at the first
    forward).
    """
    from relkd_core.models.sparse import check_backend

    check_backend(config.backend)
    return VARIANTS[config.variant](config)


def _fold(conv: nn.Module, norm: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of ``conv`` followed by the eval-mode batch norm ``norm`` (if any)."""
    weight = cast(torch.Tensor, conv.weight)
    conv_bias = getattr(conv, "bias", None)
    bias = conv_bias if conv_bias is not None else weight.new_zeros(weight.shape[2])
    if norm is None:
        return weight.contiguous(), bias.contiguous()
    assert isinstance(norm, nn.BatchNorm1d) and norm.running_var is not None
    assert norm.running_mean is not None
    scale = torch.rsqrt(norm.running_var + norm.eps)
    shift = -norm.running_mean * scale
    if norm.affine:
        scale = scale * norm.weight
        shift = shift * norm.weight + norm.bias
    return (weight * scale).contiguous(), (bias * scale + shift).contiguous()


def _scaled(channels: int, multiplier: float) -> int:
    return max(1, round(channels * multiplier))


def _init_kernel(weight: nn.Parameter) -> None:
    # He initialisation over the kernel's fan-in (volume × C_in), as for a dense convolution.
    fan_in = weight.shape[0] * weight.shape[1]
    with torch.no_grad():
        weight.normal_(0.0, math.sqrt(2.0 / fan_in))
