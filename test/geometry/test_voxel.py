"""Tests for relkd_core.geometry.voxel: grid cells, unique voxels, voxel means and back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relkd_core.geometry.voxel import (
    devoxelize,
    scatter_mean,
    unique_coordinates,
    voxel_grid_coordinates,
)


def random_points(num_points: int, scale_m: float = 20.0) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.uniform(-scale_m, scale_m, size=(num_points, 3))).float()


def test_voxel_grid_coordinates_cartesian_floors_on_both_sides_of_zero() -> None:
    xyz = torch.tensor([[0.05, -0.05, 0.0], [0.15, -0.15, 0.19], [-0.25, 0.25, 1.05]])
    cells = voxel_grid_coordinates(xyz, 0.1, "cartesian")
    assert cells.dtype == torch.int64
    torch.testing.assert_close(cells, torch.tensor([[0, -1, 0], [1, -2, 1], [-3, 2, 10]]))


def test_voxel_grid_coordinates_cylindrical_bins_range_azimuth_and_height() -> None:
    # rho = 5 m, phi = 90° (+y); rho = 2 m, phi = 180°; rho = 1.414 m, phi = -45°.
    xyz = torch.tensor([[0.0, 5.0, -1.75], [-2.0, 0.0, 0.0], [1.0, -1.0, 0.33]])
    cells = voxel_grid_coordinates(xyz, 0.5, "cylindrical", angular_resolution_deg=1.0)
    torch.testing.assert_close(cells, torch.tensor([[10, 90, -4], [4, 180, 0], [2, -45, 0]]))


@pytest.mark.parametrize("mode", ["cartesian", "cylindrical"])
def test_voxel_grid_coordinates_rejects_bad_arguments(mode: str) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        voxel_grid_coordinates(random_points(3), 0.0, mode)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be"):
        voxel_grid_coordinates(random_points(3), 0.1, "spherical")  # type: ignore[arg-type]


def test_unique_coordinates_sorted_and_inverse_reconstructs() -> None:
    cells = voxel_grid_coordinates(random_points(2000), 2.0)
    unique, inverse = unique_coordinates(cells)
    torch.testing.assert_close(unique[inverse], cells)
    assert len(unique) == len(torch.unique(cells, dim=0))
    # Lexicographic order, first column slowest: equal to torch.unique(dim=0)'s order.
    torch.testing.assert_close(unique, torch.unique(cells, dim=0))


def test_unique_coordinates_empty_input() -> None:
    unique, inverse = unique_coordinates(torch.zeros((0, 4), dtype=torch.int64))
    assert unique.shape == (0, 4)
    assert inverse.shape == (0,)


def test_scatter_mean_averages_each_voxel() -> None:
    values = torch.tensor([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]])
    means = scatter_mean(values, torch.tensor([1, 1, 0]), num_voxels=3)
    torch.testing.assert_close(means, torch.tensor([[5.0, 30.0], [2.0, 15.0], [0.0, 0.0]]))


@pytest.mark.parametrize("mode", ["cartesian", "cylindrical"])
def test_voxelize_devoxelize_round_trip_keeps_points_in_their_voxel(mode: str) -> None:
    xyz = random_points(3000)
    cells = voxel_grid_coordinates(xyz, 1.0, mode)  # type: ignore[arg-type]
    unique, inverse = unique_coordinates(cells)
    # The mean of a voxel's grid-space positions lies in that voxel (cells are convex in grid
    # space, for cylindrical voxels too), so it voxelizes back to the same cell.
    if mode == "cartesian":
        grid_space = xyz.double()
    else:
        rho = torch.hypot(xyz[:, 0], xyz[:, 1]).double()
        phi = torch.rad2deg(torch.atan2(xyz[:, 1], xyz[:, 0])).double()
        grid_space = torch.stack([rho, phi, xyz[:, 2].double()], dim=1)
    means = scatter_mean(grid_space, inverse, len(unique))
    per_point = devoxelize(means, inverse)
    torch.testing.assert_close(torch.floor(per_point).long(), cells)


def test_devoxelize_of_scatter_mean_is_identity_for_one_point_per_voxel() -> None:
    values = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    order = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(devoxelize(scatter_mean(values, order, 50), order), values)
