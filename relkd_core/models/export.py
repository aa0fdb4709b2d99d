"""TorchScript export of a trained student: one file that runs without Python or relkd.

:func:`script_student` turns a MinkUNet (trained on any backend: the weights are backend
independent) into a TorchScript module whose ``forward(points)`` takes one (N, 4) float32
``x, y, z, intensity`` scan and returns the (N, D) per-point features the eager model gives for
``model(voxelize_batch([points], config))`` in eval mode: voxelization, kernel maps and
devoxelization are inside. With a ``head`` (the distilled student's projection) D is the
teacher's dimension and the rows are L2-normalised, as ``scan_features(..., head=True)``;
otherwise D is the backbone's ``out_dim``.

- Every batch norm is folded into the convolution before it (eval-mode running statistics),
  so the file holds one weight and one bias per convolution and nothing trains.
- The voxelization functions and the ``native`` backend's kernel-map and convolution
  functions are compiled as they are (they are written in the TorchScript subset), so the
  exported file computes what the eager model computes, not a copy of it.
- ``precision='bfloat16'`` stores the backbone's folded weights in bfloat16 and runs the
  backbone in bfloat16 (the head, the normalisation and the output stay float32), as the
  Labeler's bfloat16 option does; the export check then reports how many points keep the
  float32 model's label (best stored text row).

Load it with ``torch.jit.load(path)`` in Python or ``torch::jit::load(path)`` in C++ (libtorch);
``relkd-export`` writes one from a checkpoint (:func:`export_checkpoint`), with a JSON file
``relkd.json`` inside the archive: the teacher, the student config, and the stored vocabulary
with its text embeddings, so a consumer can label points (highest dot product with a text
row) without relkd.
"""

# No ``from __future__ import annotations``: TorchScript reads the class-level buffer
# annotations below as objects, not strings.

import dataclasses
import json
import math
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from relkd_core.atomic import write_atomic
from relkd_core.config import config_to_dict
from relkd_core.errors import ModelError
from relkd_core.geometry.voxel import unique_coordinates, voxel_grid_coordinates
from relkd_core.models.batch import voxel_input_features
from relkd_core.models.distilled import StudentCheckpoint, scan_features
from relkd_core.models.inference import check_precision
from relkd_core.models.minkunet import (
    NUM_LEVELS,
    BasicBlock,
    BatchNorm,
    MinkUNet,
    Stage,
    Stride2Conv,
    SubmanifoldConv,
    TransposedConv,
)
from relkd_core.models.sparse import native

__all__ = [
    "EXPORT_KIND",
    "EXTRA_FILE",
    "ExportReport",
    "ScriptedStudent",
    "check_scan",
    "export_checkpoint",
    "is_export_file",
    "read_export_metadata",
    "script_student",
]

EXTRA_FILE = "relkd.json"
#: The output kind of relkd-export (see relkd_core.outputs).
EXPORT_KIND = "torchscript-export"
EXPORT_FORMAT = "relkd-torchscript/1"

_Down = tuple[torch.Tensor, torch.Tensor, list[int]]


def _fold(weight: torch.Tensor, norm: BatchNorm | None,
          bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(K³, C_in, C_out) weight and (C_out,) bias of a convolution followed by ``norm``, as
    new CPU tensors (the model itself is left where it is)."""
    weight = _cpu_copy(weight)
    out_bias = _cpu_copy(bias) if bias is not None else weight.new_zeros(weight.shape[2])
    if norm is None:
        return weight, out_bias
    if norm.running_mean is None or norm.running_var is None:
        raise ModelError("cannot fold a batch norm without running statistics")
    scale = torch.rsqrt(_cpu_copy(norm.running_var) + norm.eps)
    if norm.weight is not None:
        scale = scale * _cpu_copy(norm.weight)
    shift = -_cpu_copy(norm.running_mean) * scale
    if norm.bias is not None:
        shift = shift + _cpu_copy(norm.bias)
    return weight * scale, out_bias * scale + shift


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True)


class _Subm(nn.Module):
    """Submanifold convolution with its batch norm folded in (1×1×1: a plain product)."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, features: torch.Tensor, pairs: native.KernelMap) -> torch.Tensor:
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

    def forward(self, features: torch.Tensor, pairs: native.KernelMap) -> torch.Tensor:
        out = functional.relu(self.conv1(features, pairs))
        out = self.conv2(out, pairs)
        residual = features if self.projection is None else self.projection(features, pairs)
        return functional.relu(out + residual)


class _Stage(nn.Module):
    """A stride-2 convolution or its transpose (batch norm folded), ReLU, the skip
    concatenation (decoder), then the stage's blocks."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, conv: Stride2Conv, norm: BatchNorm, blocks: Stage
                 ) -> None:
        super().__init__()
        weight, bias = _fold(conv.weight, norm)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.transposed = isinstance(conv, TransposedConv)
        self.blocks = nn.ModuleList(_Block(block) for block in blocks
                                    if isinstance(block, BasicBlock))

    def forward(self, features: torch.Tensor, skip: torch.Tensor | None, down: _Down,
                num_out: int, pairs: native.KernelMap) -> torch.Tensor:
        child_order, parent, counts = down
        if self.transposed:
            out = native.up_forward(features, self.weight, child_order, parent, counts)
        else:
            out = native.down_forward(features, self.weight, child_order, parent, counts,
                                      num_out)
        out = functional.relu(out + self.bias)
        if skip is not None:
            out = torch.cat([out, skip], dim=1)
        for block in self.blocks:
            out = block(out, pairs)
        return out


class ScriptedStudent(nn.Module):
    """A MinkUNet (and optional head) as one scriptable module; see the module doc."""

    def __init__(self, model: MinkUNet, head: nn.Linear | None = None,
                 precision: str = "float32") -> None:
        super().__init__()
        self.precision = check_precision(precision)
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
        self.encoders = nn.ModuleList(
            _Stage(getattr(model, f"conv{stage + 1}p{2**stage}s2"),
                   getattr(model, f"bn{stage + 1}"), getattr(model, f"block{stage + 1}"))
            for stage in range(4))
        self.decoders = nn.ModuleList(
            _Stage(getattr(model, f"convtr{stage}p{2 ** (8 - stage)}s2"),
                   getattr(model, f"bntr{stage}"), getattr(model, f"block{stage + 1}"))
            for stage in range(4, 8))
        self.final = _Subm(*_fold(model.final.weight, None, model.final.bias))
        self.head: _Subm | None = None
        if head is not None:
            self.head = _Subm(*_fold(head.weight.T[None], None, head.bias))
        if self.precision == "bfloat16":
            for part in (self.stem, self.encoders, self.decoders, self.final):
                part.to(torch.bfloat16)

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
        features = features.to(self.stem.weight.dtype)
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
        # Level 0 is searched through its sort; coarser levels come sorted from torch.unique.
        level0_sorted, level0_order = native.sort_keys(level_keys[0])
        pairs = [native.submanifold_pairs(level_keys[0], level0_sorted, level0_order, sizes, 3)]
        for keys in level_keys[1:]:
            pairs.append(native.submanifold_pairs(keys, keys, None, sizes, 3))
        stem_pairs = pairs[0]
        if self.stem_kernel_size != 3:
            stem_pairs = native.submanifold_pairs(level_keys[0], level0_sorted, level0_order,
                                                  sizes, self.stem_kernel_size)
        out = functional.relu(self.stem(features, stem_pairs))
        skips = [out]
        for level, encoder in enumerate(self.encoders):
            out = encoder(out, None, downs[level], level_coords[level + 1].shape[0],
                          pairs[level + 1])
            skips.append(out)
        for index, decoder in enumerate(self.decoders):
            level = self.num_levels - 2 - index
            out = decoder(out, skips[level], downs[level], level_coords[level].shape[0],
                          pairs[level])
        out = self.final(out, pairs[0]).float()
        if self.normalize_output:
            out = functional.normalize(out, p=2.0, dim=1)
        if self.head is not None:
            out = functional.normalize(self.head(out, pairs[0]), p=2.0, dim=1)
        return out


def script_student(model: MinkUNet, head: nn.Linear | None = None,
                   precision: str = "float32") -> torch.jit.ScriptModule:
    """The TorchScript form of ``model`` (+ ``head``) in ``precision``, on CPU
    (``.to(device)`` moves it); ``model`` itself is not changed. See the module doc."""
    if not isinstance(model, MinkUNet):
        raise ModelError(f"script_student expects a MinkUNet, got {type(model).__name__}")
    with torch.no_grad():
        scripted: torch.jit.ScriptModule = torch.jit.script(
            ScriptedStudent(model, head, precision))
    return scripted.eval()


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What :func:`export_checkpoint` wrote and how closely the file matches the float32
    model: the largest feature difference and, with a head and stored text rows, the share of
    points whose best row (label) is the same (None otherwise)."""

    path: Path
    out_dim: int
    check_points: int
    max_abs_difference: float
    eager_ms: float
    scripted_ms: float
    precision: str = "float32"
    label_agreement: float | None = None


def export_checkpoint(checkpoint: StudentCheckpoint, path: Path, *, head: bool = True,
                      check_points: int = 20_000, precision: str = "float32") -> ExportReport:
    """Write the TorchScript form of a checkpoint's student in ``precision`` to ``path``
    (atomically).

    Then load the file back and run it and the float32 eager path (``scan_features``) on one
    synthetic scan of ``check_points`` points: the report gives the largest difference, the
    label agreement and both run times (after two warm-up calls each).
    """
    model = checkpoint.build_model("cpu")
    scripted = script_student(model.backbone, model.head if head else None, precision)
    embeddings = checkpoint.text_embeddings
    meta = {
        "format": EXPORT_FORMAT,
        "features": "teacher" if head else "backbone",
        "precision": precision,
        "teacher_id": checkpoint.teacher_id,
        "teacher_dim": checkpoint.teacher_dim,
        "student_config": config_to_dict(checkpoint.student_config),
        "vocabulary": list(checkpoint.vocabulary.names) if checkpoint.vocabulary else [],
        "text_embeddings": embeddings.tolist() if embeddings is not None and head else None,
        "code_version": checkpoint.code_version,
    }
    write_atomic(path, lambda stream: torch.jit.save(
        scripted, stream, _extra_files={EXTRA_FILE: json.dumps(meta)}))
    loaded = torch.jit.load(str(path))
    scan = check_scan(check_points)
    with torch.no_grad():
        reference, eager_ms = _timed(lambda: scan_features(model, [scan], head=head)[0])
        exported, scripted_ms = _timed(lambda: loaded(scan))
    difference = float((exported - reference).abs().max()) if len(scan) else 0.0
    agreement = None
    if head and embeddings is not None and len(scan):
        text = embeddings.float()
        agreement = float(((exported @ text.T).argmax(dim=1) ==
                           (reference @ text.T).argmax(dim=1)).float().mean())
    return ExportReport(path, int(exported.shape[1]), len(scan), difference, eager_ms,
                        scripted_ms, precision, agreement)


def _timed(run: Callable[[], torch.Tensor], warmup: int = 2) -> tuple[torch.Tensor, float]:
    """The output of ``run`` and its time in ms after ``warmup`` calls (TorchScript optimises
    a graph during its first calls)."""
    for _ in range(warmup):
        run()
    start = time.perf_counter()
    out = run()
    return out, (time.perf_counter() - start) * 1e3


def is_export_file(path: Path) -> bool:
    """Whether ``path`` is a file :func:`export_checkpoint` wrote (its ``relkd.json`` names
    the export format), read from the archive without loading the TorchScript module."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")),
                        None)
            if name is None:
                return False
            meta = json.loads(archive.read(name))
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == EXPORT_FORMAT


def read_export_metadata(path: Path) -> dict[str, Any]:
    """The ``relkd.json`` stored in an exported file."""
    files = {EXTRA_FILE: ""}
    torch.jit.load(str(path), _extra_files=files)
    meta: dict[str, Any] = json.loads(files[EXTRA_FILE])
    return meta


def check_scan(num_points: int) -> torch.Tensor:
    """A fixed street-like (N, 4) float32 scan: ground ring, two walls, intensity in [0, 1)
    (the export check's scan and the Labeler's warm-up scan)."""
    generator = torch.Generator().manual_seed(0)
    angle = torch.rand(num_points, generator=generator) * 2 * math.pi
    radius = 2.0 + 40.0 * torch.rand(num_points, generator=generator) ** 2
    xyz = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle),
                       torch.full((num_points,), -1.7)], dim=1)
    wall = torch.rand(num_points, generator=generator) < 0.3
    xyz[wall, 1] = torch.where(xyz[wall, 1] > 0, 8.0, -8.0)
    xyz[wall, 2] = -1.7 + 4.0 * torch.rand(int(wall.sum()), generator=generator)
    intensity = torch.rand(num_points, 1, generator=generator)
    return torch.cat([xyz, intensity], dim=1).float()
