"""Voxelization and devoxelization of lidar points: pure torch functions, any device.

A scan is voxelized in three steps, each a function here so that callers (the student model, a
data pipeline, a test) can use the part they need:

1. :func:`voxel_grid_coordinates`: float points (metres, lidar frame) to integer grid cells,
   Cartesian ``floor(xyz / voxel_size_m)`` or cylindrical ``floor(rho / voxel_size_m)``,
   ``floor(phi_deg / angular_resolution_deg)``, ``floor(z / voxel_size_m)`` (the SLidR
   convention: 0.1 m voxels in range and height, 1° in azimuth).
2. :func:`unique_coordinates`: the occupied cells, sorted, and the cell of every point.
3. :func:`scatter_mean` / :func:`devoxelize`: per-point values to per-voxel means and back.

``floor`` (not truncation) makes cells of equal size on both sides of zero.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = [
    "VoxelizationMode",
    "devoxelize",
    "scatter_mean",
    "unique_coordinates",
    "voxel_grid_coordinates",
]

VoxelizationMode = Literal["cartesian", "cylindrical"]


def voxel_grid_coordinates(
    xyz_lidar: torch.Tensor,
    voxel_size_m: float,
    mode: str = "cartesian",
    angular_resolution_deg: float = 1.0,
) -> torch.Tensor:
    """Integer grid cell of every point, shape (N, 3) int64.

    ``xyz_lidar`` is (N, 3) floating point, metres, lidar frame. Cartesian cells are
    ``voxel_size_m`` cubes; cylindrical cells are ``(rho, phi, z)`` with ``rho = hypot(x, y)``
    and ``phi = atan2(y, x)`` in degrees (in [-180, 180]), binned by ``voxel_size_m`` for rho
    and z and by ``angular_resolution_deg`` for phi. The computation runs in float64 so that
    points on a cell boundary land in the same cell on every device.
    """
    if voxel_size_m <= 0.0 or angular_resolution_deg <= 0.0:
        raise ValueError(
            f"voxel_size_m and angular_resolution_deg must be > 0, got {voxel_size_m} and "
            f"{angular_resolution_deg}"
        )
    xyz = xyz_lidar.to(torch.float64)
    if mode == "cartesian":
        scaled = xyz / voxel_size_m
    elif mode == "cylindrical":
        rho = torch.hypot(xyz[:, 0], xyz[:, 1]) / voxel_size_m
        phi = torch.rad2deg(torch.atan2(xyz[:, 1], xyz[:, 0])) / angular_resolution_deg
        scaled = torch.stack([rho, phi, xyz[:, 2] / voxel_size_m], dim=1)
    else:
        raise ValueError(f"mode must be 'cartesian' or 'cylindrical', got '{mode}'")
    return torch.floor(scaled).to(torch.int64)


def unique_coordinates(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Occupied cells of (N, D) int64 ``coords`` and the cell index of every row.

    Returns ``unique`` (V, D) int64, sorted lexicographically (first column slowest), and
    ``inverse`` (N,) int64 with ``unique[inverse] == coords``. The rows are packed into one
    int64 key each (mixed radix over the occupied extent), which is much faster than
    ``torch.unique(dim=0)``; an extent too large to pack raises ValueError.
    """
    if coords.ndim != 2:
        raise ValueError(f"coords must be (N, D), got shape {coords.shape}")
    num_rows = coords.shape[0]
    num_dims = coords.shape[1]
    if num_rows == 0:
        return coords.new_zeros((0, num_dims)), coords.new_zeros((0,))
    low = coords.min(dim=0).values
    sizes: list[int] = (coords.max(dim=0).values - low + 1).tolist()
    volume = 1.0
    for size in sizes:
        volume *= float(size)
    if volume >= 2.0**62:
        raise ValueError(f"coordinate extent {sizes} is too large to pack into int64 keys")
    shifted = coords - low
    keys = shifted[:, 0].clone()
    for axis in range(1, num_dims):
        keys = keys * sizes[axis] + shifted[:, axis]
    unique_keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    columns: list[torch.Tensor] = []
    for axis in range(num_dims - 1, -1, -1):
        columns.insert(0, unique_keys % sizes[axis])
        unique_keys = torch.div(unique_keys, sizes[axis], rounding_mode="floor")
    unique = torch.stack(columns, dim=1) + low
    return unique, inverse


def scatter_mean(
    values: torch.Tensor, point_to_voxel: torch.Tensor, num_voxels: int
) -> torch.Tensor:
    """Mean of the (N, C) per-point ``values`` in each voxel, shape (num_voxels, C).

    ``point_to_voxel`` is (N,) int64 in ``[0, num_voxels)``. A voxel without points gets 0.
    The dtype and device of ``values`` are kept.
    """
    sums = values.new_zeros((num_voxels, values.shape[1])).index_add_(0, point_to_voxel, values)
    counts = torch.bincount(point_to_voxel, minlength=num_voxels).clamp_(min=1)
    return sums / counts.to(values.dtype).unsqueeze(1)


def devoxelize(voxel_values: torch.Tensor, point_to_voxel: torch.Tensor) -> torch.Tensor:
    """Per-point values from (V, C) per-voxel values: each point takes its voxel's row.

    Returns (N, C) with the dtype and device of ``voxel_values``; differentiable.
    """
    return voxel_values.index_select(0, point_to_voxel)
