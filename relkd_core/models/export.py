"""TorchScript export of a trained student: one file that runs without Python or relkd.

:func:`script_student` turns a MinkUNet (trained on any backend: the weights are backend
independent) into a TorchScript module whose ``forward(points)`` takes one (N, 4) float32
``x, y, z, intensity`` scan and returns the (N, D) per-point features the eager model gives for
``model(voxelize_batch([points], config))`` in eval mode: voxelization, kernel maps and
devoxelization are inside. With a ``head`` (the distilled student's projection) D is the
teacher's dimension, otherwise the backbone's ``out_dim``.

- Every batch norm is folded into the convolution before it (eval-mode running statistics),
  so the file holds one weight and one bias per convolution and nothing trains.
- The voxelization functions and the ``native`` backend's kernel-map and convolution
  functions are compiled as they are (they are written in the TorchScript subset), so the
  exported file computes what the eager model computes, not a copy of it.

Load it with ``torch.jit.load(path)`` in Python or ``torch::jit::load(path)`` in C++ (libtorch);
``relkd-export`` writes one from a checkpoint.
"""

# No ``from __future__ import annotations``: TorchScript reads the class-level buffer
# annotations below as objects, not strings.

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

from relkd_core.errors import ModelError
from relkd_core.geometry.voxel import unique_coordinates, voxel_grid_coordinates
from relkd_core.models.batch import voxel_input_features
from relkd_core.models.minkunet import (
    NUM_LEVELS,
    BasicBlock,
    BatchNorm,
    MinkUNet,
    SubmanifoldConv,
)
from relkd_core.models.sparse import native

__all__ = ["ScriptedStudent", "script_student"]

_Pairs = list[tuple[torch.Tensor, torch.Tensor] | None]
_Down = tuple[torch.Tensor, torch.Tensor, list[int]]


def _fold(weight: torch.Tensor, norm: BatchNorm | None,
          bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(K³, C_in, C_out) weight and (C_out,) bias of a convolution followed by ``norm``."""
    weight = weight.detach().clone()
    out_bias = bias.detach().clone() if bias is not None else weight.new_zeros(weight.shape[2])
    if norm is None:
        return weight, out_bias
    if norm.running_mean is None or norm.running_var is None:
        raise ModelError("cannot fold a batch norm without running statistics")
    scale = torch.rsqrt(norm.running_var.detach() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.detach()
    shift = -norm.running_mean.detach() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.detach()
    return weight * scale, out_bias * scale + shift


class _Subm(nn.Module):
    """Submanifold convolution with its batch norm folded in (1×1×1: a plain product)."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, features: torch.Tensor, pairs: _Pairs) -> torch.Tensor:
        if self.weight.shape[0] == 1:
            return torch.addmm(self.bias, features, self.weight[0])
        return native.subm_forward(features, self.weight, pairs) + self.bias


class _Block(nn.Module):
    """BasicBlock: two folded convolutions, the optional 1×1 projection, the residual."""

    def __init__(self, block: BasicBlock) -> None:
        super().__init__()
        self.conv1 = _Subm(*_fold(block.conv1.weight, block.norm1))
        self.conv2 = _Subm(*_fold(block.conv2.weight, block.norm2))
        self.projection: _Subm | None = None
        if block.downsample is not None:
            conv, norm = block.downsample[0], block.downsample[1]
            assert isinstance(conv, SubmanifoldConv) and isinstance(norm, BatchNorm)
            self.projection = _Subm(*_fold(conv.weight, norm))

    def forward(self, features: torch.Tensor, pairs: _Pairs) -> torch.Tensor:
        out = functional.relu(self.conv1(features, pairs))
        out = self.conv2(out, pairs)
        residual = features if self.projection is None else self.projection(features, pairs)
        return functional.relu(out + residual)


class _Encoder(nn.Module):
    """Stride-2 convolution (batch norm folded), ReLU, then the stage's blocks."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, model: MinkUNet, stage: int) -> None:
        super().__init__()
        conv = getattr(model, f"conv{stage + 1}p{2**stage}s2")
        weight, bias = _fold(conv.weight, getattr(model, f"bn{stage + 1}"))
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.blocks = nn.ModuleList(_Block(b) for b in getattr(model, f"block{stage + 1}"))

    def forward(self, features: torch.Tensor, down: _Down, num_out: int,
                pairs: _Pairs) -> torch.Tensor:
        child_order, parent, counts = down
        out = native.down_forward(features, self.weight, child_order, parent, counts, num_out)
        out = functional.relu(out + self.bias)
        for block in self.blocks:
            out = block(out, pairs)
        return out


class _Decoder(nn.Module):
    """Transposed convolution (batch norm folded), ReLU, skip concatenation, the blocks."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, model: MinkUNet, stage: int) -> None:
        super().__init__()
        conv = getattr(model, f"convtr{stage}p{2 ** (8 - stage)}s2")
        weight, bias = _fold(conv.weight, getattr(model, f"bntr{stage}"))
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.blocks = nn.ModuleList(_Block(b) for b in getattr(model, f"block{stage + 1}"))

    def forward(self, features: torch.Tensor, skip: torch.Tensor, down: _Down,
                pairs: _Pairs) -> torch.Tensor:
        child_order, parent, counts = down
        out = native.up_forward(features, self.weight, child_order, parent, counts)
        out = torch.cat([functional.relu(out + self.bias), skip], dim=1)
        for block in self.blocks:
            out = block(out, pairs)
        return out


class ScriptedStudent(nn.Module):
    """A MinkUNet (and optional head) as one scriptable module; see the module doc."""

    def __init__(self, model: MinkUNet, head: nn.Linear | None = None) -> None:
        super().__init__()
        config = model.config
        self.voxel_size_m = float(config.voxel_size_m)
        self.voxelization = str(config.voxelization)
        self.angular_resolution_deg = float(config.angular_resolution_deg)
        self.input_features = str(config.input_features)
        self.normalize_output = bool(config.normalize_output)
        self.stem_kernel_size = int(config.stem_kernel_size)
        self.num_levels = NUM_LEVELS
        self.out_dim = int(config.out_dim) if head is None else int(head.out_features)
        self.stem = _Subm(*_fold(model.conv0p1s1.weight, model.bn0))
        self.encoders = nn.ModuleList(_Encoder(model, stage) for stage in range(4))
        self.decoders = nn.ModuleList(_Decoder(model, stage) for stage in range(4, 8))
        self.final = _Subm(*_fold(model.final.weight, None, model.final.bias))
        self.head: _Subm | None = None
        if head is not None:
            head_bias = head.bias.detach() if head.bias is not None else None
            self.head = _Subm(*_fold(head.weight.detach().T[None], None, head_bias))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 4) float32 xyzi -> (N, out_dim) float32 per-point features."""
        if points.dtype != torch.float32 or points.dim() != 2 or points.shape[1] != 4:
            raise ValueError(f"points must be (N, 4) float32 x, y, z, intensity, got "
                             f"{points.shape} {points.dtype}")
        if not bool(torch.isfinite(points).all()):
            raise ValueError("points hold NaN or infinite values; drop them first")
        cells = voxel_grid_coordinates(points[:, :3], self.voxel_size_m, self.voxelization,
                                       self.angular_resolution_deg)
        unique, inverse = unique_coordinates(cells)
        if unique.shape[0] == 0:
            return points.new_zeros((0, self.out_dim))
        features = voxel_input_features(points, inverse, unique.shape[0], self.input_features)
        coords = torch.cat([unique.new_zeros((unique.shape[0], 1)), unique], dim=1)
        out = self._voxels(features, coords)
        return out.index_select(0, inverse)

    def _voxels(self, features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        shifted, sizes = native.grid_layout(coords, self.num_levels)
        level_coords = [shifted]
        level_keys = [native.pack_keys(shifted, sizes)]
        downs: list[_Down] = []
        for _ in range(self.num_levels - 1):
            child_order, parent, counts, coarse, coarse_keys = native.coarser_level(
                level_coords[-1], sizes)
            downs.append((child_order, parent, counts))
            level_coords.append(coarse)
            level_keys.append(coarse_keys)
        pairs: list[_Pairs] = []
        for keys in level_keys:
            sorted_keys, order = native.sorted_keys(keys)
            pairs.append(native.submanifold_pairs(keys, sorted_keys, order, sizes, 3))
        stem_pairs = pairs[0]
        if self.stem_kernel_size != 3:
            sorted_keys, order = native.sorted_keys(level_keys[0])
            stem_pairs = native.submanifold_pairs(level_keys[0], sorted_keys, order, sizes,
                                                  self.stem_kernel_size)
        out = functional.relu(self.stem(features, stem_pairs))
        skips = [out]
        for level, encoder in enumerate(self.encoders):
            out = encoder(out, downs[level], level_coords[level + 1].shape[0], pairs[level + 1])
            skips.append(out)
        for index, decoder in enumerate(self.decoders):
            level = self.num_levels - 2 - index
            out = decoder(out, skips[level], downs[level], pairs[level])
        out = self.final(out, pairs[0])
        if self.normalize_output:
            out = functional.normalize(out, p=2.0, dim=1)
        if self.head is not None:
            out = self.head(out, pairs[0])
        return out


def script_student(model: MinkUNet, head: nn.Linear | None = None) -> torch.jit.ScriptModule:
    """The TorchScript form of ``model`` (+ ``head``), on CPU; see the module doc."""
    if not isinstance(model, MinkUNet):
        raise ModelError(f"script_student expects a MinkUNet, got {type(model).__name__}")
    cpu = model.to("cpu")
    with torch.no_grad():
        scripted: torch.jit.ScriptModule = torch.jit.script(ScriptedStudent(cpu, head))
    return scripted.eval()


def save_scripted(module: torch.jit.ScriptModule, path: Path) -> None:
    """Write ``module`` to ``path`` atomically (a crash never leaves half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.jit.save(module, str(tmp))
    tmp.replace(path)
