"""A batch of voxelized scans: the input of the student, made by a pure function."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from relkd_core.errors import ModelError
from relkd_core.geometry.voxel import scatter_mean, unique_coordinates, voxel_grid_coordinates
from relkd_core.models.config import StudentConfig

__all__ = ["VoxelBatch", "voxel_input_features", "voxelize_batch"]


@dataclasses.dataclass(frozen=True, eq=False)
class VoxelBatch:
    """Voxels of B scans and the map from every input point to its voxel.

    Attributes:
        coords: (V, 4) int64 ``(batch index, a, b, c)`` integer grid cells, sorted per scan;
            ``a, b, c`` are ``x, y, z`` or ``rho, phi, z`` bins (see ``voxel_grid_coordinates``).
        features: (V, C) float32 voxel input features (``StudentConfig.input_features``).
        point_to_voxel: (sum N_i,) int64 row of ``coords`` of every input point, in the order
            of the input points concatenated scan after scan.
        point_offsets: (B + 1,) int64; points of scan i are rows ``point_offsets[i]`` to
            ``point_offsets[i + 1]`` of the concatenated input and of the model's output.
        voxel_offsets: (B + 1,) int64; the same for the rows of ``coords``.
        cache: kernel maps built by the sparse backends for these coordinates, keyed by
            backend name, so running several models (or steps) on one batch builds them once.
    """

    coords: torch.Tensor
    features: torch.Tensor
    point_to_voxel: torch.Tensor
    point_offsets: torch.Tensor
    voxel_offsets: torch.Tensor
    cache: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def batch_size(self) -> int:
        """Number of scans B."""
        return int(self.point_offsets.shape[0]) - 1

    @property
    def num_voxels(self) -> int:
        """Number of voxels V over all scans."""
        return int(self.coords.shape[0])

    @property
    def num_points(self) -> int:
        """Number of input points over all scans."""
        return int(self.point_to_voxel.shape[0])

    @property
    def device(self) -> torch.device:
        """Device of every tensor of the batch."""
        return self.coords.device

    def split_points(self, per_point: torch.Tensor) -> list[torch.Tensor]:
        """Split a (sum N_i, ...) per-point tensor (e.g. the model output) into B scans."""
        sizes = torch.diff(self.point_offsets).tolist()
        return list(torch.split(per_point, sizes, dim=0))


def voxelize_batch(
    scans: Sequence[torch.Tensor],
    config: StudentConfig,
    *,
    device: torch.device | str | None = None,
) -> VoxelBatch:
    """Voxelize B lidar scans for the student described by ``config``.

    Each scan is an (N_i, 4) float32 tensor of ``x, y, z`` (metres, lidar frame) and
    intensity; N_i may be 0. All scans must be on one device; ``device`` moves the result
    elsewhere (None keeps the scans' device, CPU for an empty list). Voxel features are the
    means over the points of each voxel (see ``StudentConfig.input_features``). For
    ``backend: native`` on CPU with Cartesian voxels the compiled voxelizer does the work
    (``native_fast.voxelize``: the same outputs, bit for bit) when it is available.

    Raises ModelError for a scan that is not a tensor, not float32, not (N, 4), or holds a
    NaN or infinite value, naming the scan index.
    """
    if not isinstance(scans, Sequence) or isinstance(scans, torch.Tensor):
        raise ModelError(
            f"scans: expected a sequence of (N, 4) float32 tensors, got {type(scans).__name__}; "
            "wrap a single scan in a list"
        )
    source_device = _check_scans(scans)
    target = torch.device(device) if device is not None else source_device
    coords, features, point_to_voxel = [], [], []
    point_offsets, voxel_offsets = [0], [0]
    for index, scan in enumerate(scans):
        points = scan.to(target)
        fast = _fast_voxels(points, config)
        if fast is not None:
            cells, inverse, voxel_features = fast
        else:
            grid = voxel_grid_coordinates(
                points[:, :3],
                config.voxel_size_m,
                config.voxelization,
                config.angular_resolution_deg,
            )
            cells, inverse = unique_coordinates(grid)
            voxel_features = voxel_input_features(points, inverse, cells.shape[0],
                                                  config.input_features)
        batch_column = torch.full((cells.shape[0], 1), index, dtype=torch.int64, device=target)
        coords.append(torch.cat([batch_column, cells], dim=1))
        features.append(voxel_features)
        point_to_voxel.append(inverse + voxel_offsets[-1])
        point_offsets.append(point_offsets[-1] + points.shape[0])
        voxel_offsets.append(voxel_offsets[-1] + cells.shape[0])
    channels, int64 = config.in_channels, torch.int64
    return VoxelBatch(
        coords=torch.cat(coords) if coords else torch.zeros((0, 4), dtype=int64, device=target),
        features=torch.cat(features) if features else torch.zeros((0, channels), device=target),
        point_to_voxel=(
            torch.cat(point_to_voxel)
            if point_to_voxel
            else torch.zeros(0, dtype=int64, device=target)
        ),
        point_offsets=torch.tensor(point_offsets, dtype=torch.int64, device=target),
        voxel_offsets=torch.tensor(voxel_offsets, dtype=torch.int64, device=target),
    )


def _fast_voxels(points: torch.Tensor, config: StudentConfig
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The compiled voxelizer's (cells, inverse, features) of one scan for ``backend: native``
    (Cartesian, CPU, when it can be built); None: the reference functions run instead."""
    if (config.backend != "native" or config.voxelization != "cartesian"
            or points.device.type != "cpu" or points.shape[0] == 0):
        return None
    from relkd_core.models.sparse import native_fast

    ops = native_fast.fast_ops()
    if ops is None:
        return None
    return native_fast.voxelize(ops, points, config.voxel_size_m, config.input_features)


def _check_scans(scans: Sequence[torch.Tensor]) -> torch.device:
    devices = set()
    for index, scan in enumerate(scans):
        if not isinstance(scan, torch.Tensor):
            raise ModelError(
                f"scans[{index}]: expected a torch.Tensor (N, 4) float32, got "
                f"{type(scan).__name__}; convert with torch.from_numpy(points.astype('float32'))"
            )
        if scan.dtype != torch.float32:
            raise ModelError(
                f"scans[{index}]: expected dtype torch.float32, got {scan.dtype}; cast at the "
                "boundary with .float()"
            )
        if scan.ndim != 2 or scan.shape[1] != 4:
            raise ModelError(
                f"scans[{index}]: expected shape (N, 4) (x, y, z, intensity), got "
                f"{tuple(scan.shape)}"
            )
        # One sum is finite only if every value is (a NaN or an infinity never cancels);
        # only a sum that is not (or overflows) pays for the elementwise check.
        if not bool(torch.isfinite(scan.sum())) and not bool(torch.isfinite(scan).all()):
            bad = int((~torch.isfinite(scan).all(dim=1)).sum())
            raise ModelError(
                f"scans[{index}]: {bad} point(s) hold NaN or infinite values; drop them first "
                "(e.g. points[torch.isfinite(points).all(dim=1)])"
            )
        devices.add(scan.device)
    if len(devices) > 1:
        raise ModelError(f"scans: all scans must be on one device, got {sorted(map(str, devices))}")
    return devices.pop() if devices else torch.device("cpu")


def voxel_input_features(
    points: torch.Tensor, inverse: torch.Tensor, num_voxels: int, input_features: str
) -> torch.Tensor:
    """(num_voxels, C) input features of one scan's voxels (``StudentConfig.input_features``)
    from its (N, 4) xyzi ``points`` and the voxel of every point; TorchScript-compatible."""
    if input_features == "ones":
        return points.new_ones((num_voxels, 1))
    if input_features == "intensity":
        return scatter_mean(points[:, 3:4], inverse, num_voxels)
    return scatter_mean(points, inverse, num_voxels)
