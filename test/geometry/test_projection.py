"""Tests for relkd_core.geometry.projection: pinhole rays, projection and pixel conventions."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from relkd_core.geometry.projection import (
    R_BODY_OPTICAL,
    intrinsics_matrix,
    pixel_indices,
    pixel_rays,
    project_points,
    unoccluded_mask,
)

WIDTH, HEIGHT = 8, 6
K = intrinsics_matrix(fx_px=50.0, fy_px=45.0, cx_px=3.7, cy_px=2.4)


def pixel_grid(width: int, height: int) -> NDArray[np.float64]:
    """(H*W)×2 pixel centres ``(u, v)`` in row-major order."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.stack([u.reshape(-1), v.reshape(-1)], axis=1)


def test_intrinsics_matrix_layout() -> None:
    np.testing.assert_array_equal(K, [[50.0, 0.0, 3.7], [0.0, 45.0, 2.4], [0.0, 0.0, 1.0]])


def test_pixel_rays_are_unit_and_forward() -> None:
    rays = pixel_rays(K, WIDTH, HEIGHT)
    assert rays.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1.0, atol=1e-15)
    assert np.all(rays[..., 2] > 0.0)


def test_pixel_rays_principal_point_looks_down_optical_axis() -> None:
    rays = pixel_rays(intrinsics_matrix(10.0, 10.0, 2.0, 1.0), 5, 3)
    np.testing.assert_allclose(rays[1, 2], [0.0, 0.0, 1.0], atol=1e-15)
    # Right of the centre is +x and below it is +y (optical frame: x right, y down).
    assert rays[1, 4, 0] > 0.0
    assert rays[2, 2, 1] > 0.0


@pytest.mark.parametrize(
    "K_test",
    [K, np.array([[60.0, 0.5, 4.1], [0.0, 58.0, 2.9], [0.0, 0.0, 1.0]])],
    ids=["pinhole", "skewed"],
)
def test_pixel_rays_project_back_to_pixel_centres(K_test: NDArray[np.float64]) -> None:
    rays = pixel_rays(K_test, WIDTH, HEIGHT).reshape(-1, 3)
    depth_m = np.random.default_rng(0).uniform(0.5, 80.0, size=len(rays))
    xyz = rays * (depth_m / rays[:, 2])[:, None]
    uv, visible = project_points(xyz, K_test, WIDTH, HEIGHT)
    np.testing.assert_allclose(uv, pixel_grid(WIDTH, HEIGHT), rtol=0.0, atol=1e-9)
    assert visible.all()
    np.testing.assert_array_equal(pixel_indices(uv), pixel_grid(WIDTH, HEIGHT).astype(np.int64))


def test_project_points_known_value() -> None:
    uv, visible = project_points([[0.5, -0.5, 10.0], [1.0, -0.5, 10.0]], K, WIDTH, HEIGHT)
    np.testing.assert_allclose(uv, [[6.2, 0.15], [8.7, 0.15]], atol=1e-12)
    np.testing.assert_array_equal(visible, [True, False])  # u = 8.7 lies right of the image


def test_project_points_scale_invariant() -> None:
    xyz = np.random.default_rng(0).uniform([-1.0, -1.0, 1.0], [1.0, 1.0, 5.0], size=(30, 3))
    uv, _ = project_points(xyz, K, WIDTH, HEIGHT)
    uv_scaled, _ = project_points(3.0 * xyz, K, WIDTH, HEIGHT)
    np.testing.assert_allclose(uv_scaled, uv, atol=1e-12)


@pytest.mark.parametrize(
    "depth_m",
    [-5.0, -0.1, 0.0, 0.05, 0.1],
    ids=["far-behind", "behind", "zero", "too-near", "at-min-depth"],
)
def test_project_points_behind_or_too_near_is_nan_and_hidden(depth_m: float) -> None:
    xyz = [[0.0, 0.0, depth_m], [0.0, 0.0, 2.0]]
    with np.errstate(all='raise'):  # no division by zero for the rejected point
        uv, visible = project_points(xyz, K, WIDTH, HEIGHT, min_depth_m=0.1)
    assert np.isnan(uv[0]).all()
    np.testing.assert_allclose(uv[1], [3.7, 2.4], atol=1e-15)
    np.testing.assert_array_equal(visible, [False, True])


def test_project_points_min_depth_is_respected() -> None:
    uv, visible = project_points([[0.0, 0.0, 1.5]], K, WIDTH, HEIGHT, min_depth_m=2.0)
    assert np.isnan(uv).all()
    np.testing.assert_array_equal(visible, [False])


def test_project_points_empty_input() -> None:
    uv, visible = project_points(np.zeros((0, 3)), K, WIDTH, HEIGHT)
    assert uv.shape == (0, 2)
    assert visible.shape == (0,)


# With K = identity and depth 1 a point's (x, y) is its (u, v), so edges can be hit exactly.
@pytest.mark.parametrize(
    ("u", "v", "expected"),
    [
        (-0.5, 2.0, True),
        (-0.5 - 1e-9, 2.0, False),
        (WIDTH - 0.5 - 1e-9, 2.0, True),
        (WIDTH - 0.5, 2.0, False),
        (3.0, -0.5, True),
        (3.0, -0.5 - 1e-9, False),
        (3.0, HEIGHT - 0.5 - 1e-9, True),
        (3.0, HEIGHT - 0.5, False),
    ],
)
def test_project_points_visibility_boundary(u: float, v: float, expected: bool) -> None:
    uv, visible = project_points([[u, v, 1.0]], np.eye(3), WIDTH, HEIGHT)
    np.testing.assert_array_equal(uv, [[u, v]])
    np.testing.assert_array_equal(visible, [expected])


def test_project_points_visible_means_index_inside_image() -> None:
    rng = np.random.default_rng(0)
    xyz = np.column_stack([rng.uniform(-2.0, WIDTH + 1.0, 2000),
                           rng.uniform(-2.0, HEIGHT + 1.0, 2000), np.ones(2000)])
    uv, visible = project_points(xyz, np.eye(3), WIDTH, HEIGHT)
    columns, rows = pixel_indices(uv[visible]).T
    assert visible.any()
    assert (~visible).any()
    assert columns.min() >= 0 and columns.max() <= WIDTH - 1
    assert rows.min() >= 0 and rows.max() <= HEIGHT - 1


@pytest.mark.parametrize(
    ("uv", "expected"),
    [
        ([10.3, 4.0], [10, 4]),
        ([10.7, 4.2], [11, 4]),
        ([-0.4, 0.49], [0, 0]),
        ([0.51, 5.9999], [1, 6]),
        ([-1.2, -0.6], [-1, -1]),
    ],
)
def test_pixel_indices_rounds_to_nearest(uv: list[float], expected: list[int]) -> None:
    indices = pixel_indices(np.array([uv]))
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, [expected])


@pytest.mark.parametrize(
    ("optical", "body"),
    [
        ([0.0, 0.0, 1.0], [1.0, 0.0, 0.0]),    # forward
        ([1.0, 0.0, 0.0], [0.0, -1.0, 0.0]),   # right
        ([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]),   # down
    ],
    ids=["z-forward", "x-right", "y-down"],
)
def test_r_body_optical_axes(optical: list[float], body: list[float]) -> None:
    np.testing.assert_array_equal(R_BODY_OPTICAL @ optical, body)


def test_r_body_optical_is_proper_rotation() -> None:
    np.testing.assert_array_equal(R_BODY_OPTICAL @ R_BODY_OPTICAL.T, np.eye(3))
    assert np.linalg.det(R_BODY_OPTICAL) == pytest.approx(1.0)


def test_unoccluded_mask_hides_points_behind_nearer_ones() -> None:
    # A near point (5 m) and a far point (20 m) in the same cell; a lone far point elsewhere.
    uv = np.array([[10.0, 10.0], [11.0, 10.0], [50.0, 30.0]])
    depth = np.array([5.0, 20.0, 20.0])
    mask = unoccluded_mask(uv, depth, width=64, height=48)
    assert mask.tolist() == [True, False, True]


def test_unoccluded_mask_keeps_points_within_margin() -> None:
    # 10 m and 11.5 m: within 20 % + 0.3 m of each other, both kept (same surface).
    uv = np.array([[10.0, 10.0], [12.0, 10.0]])
    mask = unoccluded_mask(uv, np.array([10.0, 11.5]), width=64, height=48)
    assert mask.all()


def test_unoccluded_mask_neighbouring_cell_occludes_horizontally_not_vertically() -> None:
    near, far = 5.0, 30.0
    beside = unoccluded_mask(np.array([[4.0, 4.0], [7.0, 4.0]]), np.array([near, far]), 64, 48)
    below = unoccluded_mask(np.array([[4.0, 4.0], [4.0, 7.0]]), np.array([near, far]), 64, 48)
    assert beside.tolist() == [True, False]
    assert below.tolist() == [True, True]


def test_unoccluded_mask_empty_input() -> None:
    assert unoccluded_mask(np.zeros((0, 2)), np.zeros(0), 64, 48).shape == (0,)
