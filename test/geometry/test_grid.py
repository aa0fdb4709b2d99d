"""Tests for relkd_core.geometry.grid: bilinear sampling equals upsampling the grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.functional import interpolate

from relkd_core.errors import DataError
from relkd_core.geometry.grid import sample_grid


@pytest.mark.parametrize('dim', [5, 384])
def test_grid_sample_equals_bilinear_upsampling_at_pixels(dim: int) -> None:
    # 384-d: the 1,536 pixels are interpolated in several blocks, the last one partial.
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(4, 6, dim)).astype(np.float32)
    width, height = 48, 32
    up = interpolate(torch.from_numpy(grid).permute(2, 0, 1)[None], size=(height, width),
                       mode='bilinear', align_corners=False)[0].permute(1, 2, 0).numpy()
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    uv = np.column_stack([u.ravel(), v.ravel()]).astype(np.float32)
    out = sample_grid(grid, (width, height), uv, normalize=False)
    np.testing.assert_allclose(out, up.reshape(-1, dim), atol=1e-5)
    # A read-only grid (a memory-mapped shard) and a strided view sample the same.
    frozen = grid.copy()
    frozen.flags.writeable = False
    strided = np.concatenate([grid, grid], axis=2)[:, :, ::2]
    strided[:] = grid
    for other in (frozen, strided):
        np.testing.assert_array_equal(sample_grid(other, (width, height), uv, normalize=False),
                                      out)


def test_grid_sample_at_cell_centre_returns_that_cell_normalised() -> None:
    grid = np.zeros((2, 2, 3), dtype=np.float16)
    grid[0, 1] = [3.0, 4.0, 0.0]
    out = sample_grid(grid, (32, 32), np.array([[23.5, 7.5]]))
    np.testing.assert_allclose(out[0], [0.6, 0.8, 0.0], atol=1e-6)


def test_grid_sample_outside_clamps_to_edge_cells() -> None:
    grid = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    out = sample_grid(grid, (20, 10), np.array([[-5.0, -5.0], [40.0, 30.0]]), normalize=False)
    np.testing.assert_array_equal(out, [[0, 1, 2], [3, 4, 5]])


def test_grid_sample_rejects_flat_grid() -> None:
    with pytest.raises(DataError, match=r'feature grid must be Hg×Wg×D, got shape \(4, 5\)'):
        sample_grid(np.zeros((4, 5)), (10, 10), np.zeros((1, 2)))


@pytest.mark.parametrize('num_points', [3, 500])
def test_grid_sample_of_a_float16_grid_equals_that_of_its_float32_copy(num_points: int) -> None:
    # 3 points gather and widen rows; 500 (more than the 6×8 cells / 4) widen the grid first.
    rng = np.random.default_rng(1)
    grid = rng.normal(size=(6, 8, 16)).astype(np.float16)
    uv = rng.uniform(-5, 85, size=(num_points, 2))
    got = sample_grid(grid, (80, 60), uv)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, sample_grid(grid.astype(np.float32), (80, 60), uv))
    np.testing.assert_array_equal(sample_grid(grid, (80, 60), uv, normalize=False),
                                  sample_grid(grid.astype(np.float32), (80, 60), uv,
                                              normalize=False))
