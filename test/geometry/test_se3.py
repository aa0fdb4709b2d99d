"""Tests for relkd_core.geometry.se3: quaternions, rigid transforms and interpolation."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from relkd_core.geometry.se3 import (
    interpolate_transform,
    invert_transform,
    make_transform,
    matrix_to_quaternion,
    quaternion_to_matrix,
    rotation_rpy,
    rotation_z,
    transform_points,
)

HALF = np.pi / 2


def random_quaternions(count: int, seed: int = 0) -> NDArray[np.float64]:
    """Uniformly distributed unit quaternions ``(x, y, z, w)``, either sign of ``w``."""
    q = np.random.default_rng(seed).normal(size=(count, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def random_transforms(count: int, seed: int = 0) -> list[NDArray[np.float64]]:
    translations = np.random.default_rng(seed + 1).uniform(-5.0, 5.0, size=(count, 3))
    return [make_transform(quaternion_to_matrix(q), t)
            for q, t in zip(random_quaternions(count, seed), translations, strict=True)]


def assert_same_rotation_quaternion(q_a: NDArray[np.float64], q_b: NDArray[np.float64]) -> None:
    """q and -q are the same rotation."""
    sign = 1.0 if float(np.dot(q_a, q_b)) >= 0 else -1.0
    np.testing.assert_allclose(q_a, sign * q_b, atol=1e-12)


# --- quaternions -------------------------------------------------------------------------------

def test_quaternion_to_matrix_identity() -> None:
    np.testing.assert_array_equal(quaternion_to_matrix([0.0, 0.0, 0.0, 1.0]), np.eye(3))


def test_quaternion_to_matrix_is_rotation() -> None:
    for q in random_quaternions(50):
        R = quaternion_to_matrix(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)


def test_quaternion_to_matrix_known_yaw() -> None:
    # 90° about +z: (sin 45°) z + cos 45°; x axis goes to y.
    s = np.sqrt(0.5)
    R = quaternion_to_matrix([0.0, 0.0, s, s])
    np.testing.assert_allclose(R, [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
                               atol=1e-15)


def test_quaternion_to_matrix_normalises_input() -> None:
    q = random_quaternions(1)[0]
    np.testing.assert_allclose(quaternion_to_matrix(7.5 * q), quaternion_to_matrix(q), atol=1e-14)


def test_quaternion_to_matrix_sign_does_not_matter() -> None:
    q = random_quaternions(1)[0]
    np.testing.assert_allclose(quaternion_to_matrix(-q), quaternion_to_matrix(q), atol=1e-15)


@pytest.mark.parametrize(
    "quaternion",
    [
        [0.0, 0.0, 0.0, 0.0],
        [1e-13, 0.0, 0.0, 0.0],
        [np.nan, 0.0, 0.0, 1.0],
        [0.0, np.inf, 0.0, 1.0],
    ],
    ids=["zero", "tiny", "nan", "inf"],
)
def test_quaternion_to_matrix_rejects_degenerate(quaternion: list[float]) -> None:
    with pytest.raises(ValueError, match="quaternion must be finite and non-zero"):
        quaternion_to_matrix(quaternion)


def test_matrix_to_quaternion_round_trip_random() -> None:
    for q in random_quaternions(200):
        q_back = matrix_to_quaternion(quaternion_to_matrix(q))
        assert_same_rotation_quaternion(q_back, q)


def test_matrix_to_quaternion_matrix_round_trip_random() -> None:
    for q in random_quaternions(200, seed=3):
        R = quaternion_to_matrix(q)
        np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12)


def test_matrix_to_quaternion_canonical_w_non_negative() -> None:
    quaternions = np.array([matrix_to_quaternion(quaternion_to_matrix(q))
                            for q in random_quaternions(200)])
    assert np.all(quaternions[:, 3] >= 0.0)
    np.testing.assert_allclose(np.linalg.norm(quaternions, axis=1), 1.0, atol=1e-14)


# Half-turns have trace -1 and exercise every non-trace branch of Shepperd's method.
@pytest.mark.parametrize(
    ("rotation", "expected_xyzw"),
    [
        (np.eye(3), [0.0, 0.0, 0.0, 1.0]),
        (np.diag([1.0, -1.0, -1.0]), [1.0, 0.0, 0.0, 0.0]),
        (np.diag([-1.0, 1.0, -1.0]), [0.0, 1.0, 0.0, 0.0]),
        (np.diag([-1.0, -1.0, 1.0]), [0.0, 0.0, 1.0, 0.0]),
        (rotation_z(HALF), [0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)]),
    ],
    ids=["identity", "half-turn-x", "half-turn-y", "half-turn-z", "yaw-90"],
)
def test_matrix_to_quaternion_known_cases(rotation: NDArray[np.float64],
                                          expected_xyzw: list[float]) -> None:
    assert_same_rotation_quaternion(matrix_to_quaternion(rotation), np.array(expected_xyzw))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_matrix_to_quaternion_round_trip_near_half_turn(axis: int) -> None:
    # Angles close to π (trace near -1) take the diagonal branches.
    q = np.zeros(4)
    angle = np.pi - 1e-3
    q[axis], q[3] = np.sin(angle / 2), np.cos(angle / 2)
    R = quaternion_to_matrix(q)
    assert_same_rotation_quaternion(matrix_to_quaternion(R), q)


# --- transforms --------------------------------------------------------------------------------

def test_make_transform_layout() -> None:
    R = rotation_z(0.3)
    T = make_transform(R, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(T[:3, :3], R)
    np.testing.assert_array_equal(T[:3, 3], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(T[3], [0.0, 0.0, 0.0, 1.0])


def test_invert_transform_gives_identity_both_sides() -> None:
    for T in random_transforms(50):
        T_inv = invert_transform(T)
        np.testing.assert_allclose(T @ T_inv, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(T_inv @ T, np.eye(4), atol=1e-12)


def test_invert_transform_matches_general_inverse() -> None:
    for T in random_transforms(20, seed=5):
        np.testing.assert_allclose(invert_transform(T), np.linalg.inv(T), atol=1e-12)


def test_invert_transform_twice_is_identity_operation() -> None:
    T = random_transforms(1)[0]
    np.testing.assert_allclose(invert_transform(invert_transform(T)), T, atol=1e-12)


def test_transform_points_matches_homogeneous_product() -> None:
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(100, 3))
    for T in random_transforms(10):
        homogeneous = np.hstack([xyz, np.ones((100, 1))]) @ T.T
        np.testing.assert_allclose(transform_points(T, xyz), homogeneous[:, :3], atol=1e-12)


def test_transform_points_known_values() -> None:
    T_a_b = make_transform(rotation_z(HALF), [1.0, 0.0, 0.0])
    xyz_a = transform_points(T_a_b, [[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    np.testing.assert_allclose(xyz_a, [[1.0, 1.0, 0.0], [1.0, 0.0, 2.0]], atol=1e-15)


def test_transform_points_returns_float64_n_by_3() -> None:
    xyz = transform_points(np.eye(4), np.array([1.0, 2.0, 3.0], dtype=np.float32))
    assert xyz.dtype == np.float64
    np.testing.assert_array_equal(xyz, [[1.0, 2.0, 3.0]])


def test_transform_points_composition_convention() -> None:
    # T_a_c = T_a_b @ T_b_c: mapping c → b → a equals mapping c → a in one step.
    T_a_b, T_b_c = random_transforms(2, seed=9)
    xyz_c = np.random.default_rng(0).normal(size=(20, 3))
    step_by_step = transform_points(T_a_b, transform_points(T_b_c, xyz_c))
    np.testing.assert_allclose(transform_points(T_a_b @ T_b_c, xyz_c), step_by_step, atol=1e-12)


def test_transform_points_inverse_round_trip() -> None:
    T = random_transforms(1, seed=2)[0]
    xyz = np.random.default_rng(0).normal(size=(20, 3))
    np.testing.assert_allclose(transform_points(invert_transform(T), transform_points(T, xyz)),
                               xyz, atol=1e-12)


# --- rotations from angles ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("roll", "pitch", "yaw", "vector", "expected"),
    [
        (HALF, 0.0, 0.0, [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]),    # roll: +y → +z
        (0.0, HALF, 0.0, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]),    # pitch: +z → +x
        (0.0, HALF, 0.0, [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]),   # pitch: +x → -z (nose down)
        (0.0, 0.0, HALF, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),    # yaw: +x → +y
        # fixed axes: roll first, then yaw. +y rolls to +z, and yaw leaves +z alone.
        (HALF, 0.0, HALF, [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]),
        # +x is untouched by roll, then yaw takes it to +y.
        (HALF, 0.0, HALF, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
        # +z rolls to -y, then yaw takes -y to +x.
        (HALF, 0.0, HALF, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]),
    ],
)
def test_rotation_rpy_known_quarter_turns(roll: float, pitch: float, yaw: float,
                                          vector: list[float], expected: list[float]) -> None:
    np.testing.assert_allclose(rotation_rpy(roll, pitch, yaw) @ vector, expected, atol=1e-15)


def test_rotation_rpy_yaw_only_equals_rotation_z() -> None:
    np.testing.assert_allclose(rotation_rpy(0.0, 0.0, 0.7), rotation_z(0.7), atol=1e-15)


def test_rotation_rpy_is_rotation() -> None:
    angles = np.random.default_rng(0).uniform(-np.pi, np.pi, size=(30, 3))
    for roll, pitch, yaw in angles:
        R = rotation_rpy(roll, pitch, yaw)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)


# --- interpolation -----------------------------------------------------------------------------

def test_interpolate_transform_endpoints_exact() -> None:
    T_0, T_1 = random_transforms(2, seed=4)
    np.testing.assert_allclose(interpolate_transform(T_0, T_1, 0.0), T_0, atol=1e-12)
    np.testing.assert_allclose(interpolate_transform(T_0, T_1, 1.0), T_1, atol=1e-12)


def test_interpolate_transform_midpoint_of_quarter_yaw() -> None:
    T_0 = make_transform(np.eye(3), [0.0, 0.0, 0.0])
    T_1 = make_transform(rotation_z(HALF), [2.0, -4.0, 6.0])
    T_mid = interpolate_transform(T_0, T_1, 0.5)
    np.testing.assert_allclose(T_mid[:3, :3], rotation_z(np.pi / 4), atol=1e-12)
    np.testing.assert_allclose(T_mid[:3, 3], [1.0, -2.0, 3.0], atol=1e-15)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.6, 0.9])
def test_interpolate_transform_constant_angular_rate(fraction: float) -> None:
    T_1 = make_transform(rotation_z(HALF), [0.0, 0.0, 0.0])
    T = interpolate_transform(np.eye(4), T_1, fraction)
    np.testing.assert_allclose(T[:3, :3], rotation_z(fraction * HALF), atol=1e-12)


def test_interpolate_transform_translation_linear() -> None:
    T_0 = make_transform(rotation_z(0.2), [1.0, 1.0, 1.0])
    T_1 = make_transform(rotation_z(1.4), [3.0, -1.0, 5.0])
    for fraction in np.linspace(0.0, 1.0, 11):
        T = interpolate_transform(T_0, T_1, fraction)
        np.testing.assert_allclose(T[:3, 3], [1.0 + 2.0 * fraction, 1.0 - 2.0 * fraction,
                                             1.0 + 4.0 * fraction], atol=1e-14)


def test_interpolate_transform_short_way_round() -> None:
    # yaw +170° and -170° have canonical quaternions of opposite sign (dot < 0): the short
    # way between them passes through 180°, not through 0°.
    T_0 = make_transform(rotation_z(np.deg2rad(170.0)), [0.0, 0.0, 0.0])
    T_1 = make_transform(rotation_z(np.deg2rad(-170.0)), [0.0, 0.0, 0.0])
    q_0, q_1 = matrix_to_quaternion(T_0[:3, :3]), matrix_to_quaternion(T_1[:3, :3])
    assert float(np.dot(q_0, q_1)) < 0.0
    T_mid = interpolate_transform(T_0, T_1, 0.5)
    np.testing.assert_allclose(T_mid[:3, :3], rotation_z(np.pi), atol=1e-12)
    T_quarter = interpolate_transform(T_0, T_1, 0.25)
    np.testing.assert_allclose(T_quarter[:3, :3], rotation_z(np.deg2rad(175.0)), atol=1e-12)


def test_interpolate_transform_nearly_equal_rotations() -> None:
    # Below ~3.6° apart the lerp branch is taken; the midpoint is still exact by symmetry.
    T_0 = make_transform(rotation_z(0.3), [0.0, 0.0, 0.0])
    T_1 = make_transform(rotation_z(0.31), [0.0, 0.0, 0.0])
    T_mid = interpolate_transform(T_0, T_1, 0.5)
    np.testing.assert_allclose(T_mid[:3, :3], rotation_z(0.305), atol=1e-12)


def test_interpolate_transform_same_pose_is_constant() -> None:
    T = random_transforms(1, seed=6)[0]
    for fraction in (0.0, 0.3, 1.0):
        np.testing.assert_allclose(interpolate_transform(T, T, fraction), T, atol=1e-12)


def test_interpolate_transform_result_is_rigid() -> None:
    transforms = random_transforms(20, seed=8)
    fractions = np.random.default_rng(0).uniform(0.0, 1.0, size=10)
    for T_0, T_1, fraction in zip(transforms[:10], transforms[10:], fractions, strict=True):
        R = interpolate_transform(T_0, T_1, float(fraction))[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)


def test_interpolate_transform_reversed_is_symmetric() -> None:
    T_0, T_1 = random_transforms(2, seed=10)
    np.testing.assert_allclose(interpolate_transform(T_0, T_1, 0.3),
                               interpolate_transform(T_1, T_0, 0.7), atol=1e-12)
