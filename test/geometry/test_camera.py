"""Tests for relkd_core.geometry.camera: CameraInfo models, distortion, point-pixel pairs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from relkd_core.errors import CalibrationError
from relkd_core.geometry.camera import CameraModel, distort_normalized, point_pixel_pairs
from relkd_core.geometry.projection import intrinsics_matrix, project_points

K = intrinsics_matrix(200.0, 210.0, 160.0, 120.0)


def _info(**kw: object) -> SimpleNamespace:
    base = dict(width=320, height=240, k=K.ravel().tolist(), d=[], distortion_model='plumb_bob',
                r=np.eye(3).ravel().tolist(), p=np.hstack([K, np.zeros((3, 1))]).ravel().tolist())
    base.update(kw)
    return SimpleNamespace(**base)


def _points(n: int = 500) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.column_stack([rng.uniform(-4, 4, n), rng.uniform(-3, 3, n), rng.uniform(0.5, 20, n)])


def test_camera_without_distortion_matches_pinhole_projection() -> None:
    model = CameraModel.from_camera_info(_info())
    uv, visible = model.project(_points())
    uv_ref, visible_ref = project_points(_points(), K, 320, 240)
    np.testing.assert_array_equal(visible, visible_ref)
    np.testing.assert_allclose(uv[visible], uv_ref[visible], atol=1e-9)


def test_camera_plumb_bob_matches_hand_computed_value() -> None:
    d = [0.1, -0.05, 0.001, 0.002, 0.01]
    model = CameraModel.from_camera_info(_info(d=d))
    x, y = 0.3, -0.2
    r2 = x * x + y * y
    radial = 1 + 0.1 * r2 - 0.05 * r2**2 + 0.01 * r2**3
    xd = x * radial + 2 * 0.001 * x * y + 0.002 * (r2 + 2 * x * x)
    yd = y * radial + 0.001 * (r2 + 2 * y * y) + 2 * 0.002 * x * y
    uv, visible = model.project([[x * 5.0, y * 5.0, 5.0]])
    assert visible[0]
    np.testing.assert_allclose(uv[0], [200 * xd + 160, 210 * yd + 120], atol=1e-9)


def test_camera_equidistant_matches_fisheye_formula() -> None:
    out = distort_normalized(np.array([[0.5, 0.0]]), 'equidistant', np.array([0.1, 0, 0, 0]))
    theta = np.arctan(0.5)
    np.testing.assert_allclose(out[0, 0], theta * (1 + 0.1 * theta**2), atol=1e-12)


def test_camera_strong_distortion_does_not_fold_far_points_into_the_image() -> None:
    # k1 < 0: the radial polynomial turns back near r = 1/sqrt(3*0.4); points beyond would
    # otherwise land near the image centre.
    model = CameraModel.from_camera_info(_info(d=[-0.4, 0, 0, 0, 0]))
    _, visible = model.project([[30.0, 0.0, 1.5], [0.1, 0.0, 5.0]])
    assert visible.tolist() == [False, True]


def test_camera_rectified_uses_r_and_p() -> None:
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    P = np.hstack([K, [[-20.0], [0.0], [0.0]]])
    model = CameraModel.from_camera_info(_info(r=R.ravel().tolist(), p=P.ravel().tolist(),
                                               d=[0.3, 0, 0, 0, 0]), 'rectified')
    xyz = np.array([[0.5, 0.2, 4.0]])
    hom = P @ np.append(R @ xyz[0], 1.0)
    uv, visible = model.project(xyz)
    assert visible[0]
    np.testing.assert_allclose(uv[0], hom[:2] / hom[2], atol=1e-9)


def test_camera_ros1_field_names_are_read() -> None:
    info = SimpleNamespace(width=320, height=240, K=K.ravel(), D=np.zeros(5),
                           distortion_model='plumb_bob', R=np.eye(3).ravel(), P=np.zeros(12))
    model = CameraModel.from_camera_info(info)
    np.testing.assert_array_equal(model.K, K)
    assert model.P is None


@pytest.mark.parametrize(('info', 'source', 'message'), [
    (_info(k=[0.0] * 9), 'raw', r'camera matrix K is singular'),
    (_info(p=[0.0] * 12), 'rectified', r'rectified projection needs a 3x4 P matrix'),
    (_info(width=0), 'raw', r'camera image size must be positive, got 0x240'),
    (_info(d=[0.1], distortion_model='kannala'), 'raw', r"unsupported distortion model 'kannala'"),
])
def test_camera_bad_camera_info_raises(info: SimpleNamespace, source: str, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        CameraModel.from_camera_info(info, source)  # type: ignore[arg-type]


def test_camera_point_pixel_pairs_drop_hidden_and_behind_points() -> None:
    model = CameraModel.from_camera_info(_info())
    wall = np.column_stack([np.linspace(-1, 1, 41), np.zeros(41), np.full(41, 5.0)])
    hidden = np.array([[0.0, 0.0, 15.0]])      # straight behind the wall
    behind = np.array([[0.0, 0.0, -3.0]])      # behind the camera
    xyz = np.vstack([wall, hidden, behind])
    index, uv = point_pixel_pairs(xyz, np.eye(4), model, min_depth_m=1.0)
    assert index.tolist() == list(range(41))
    assert uv.dtype == np.float32
    kept, _ = point_pixel_pairs(xyz, np.eye(4), model, occlusion_filter=False)
    assert kept.tolist() == list(range(42))
