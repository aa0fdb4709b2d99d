"""Rigid transforms as 4×4 float64 matrices.

Naming: ``T_a_b`` maps points expressed in frame ``b`` into frame ``a``
(``x_a = T_a_b @ x_b``), so ``T_a_c = T_a_b @ T_b_c`` reads left to right.
Quaternions are ``(x, y, z, w)`` as in ``geometry_msgs/Quaternion``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Float64Array = NDArray[np.float64]


def quaternion_to_matrix(quaternion_xyzw: ArrayLike) -> Float64Array:
    """Rotation matrix (3×3) of a quaternion ``(x, y, z, w)``; normalised first.

    Raises ValueError for a zero or non-finite quaternion.
    """
    q = np.asarray(quaternion_xyzw, dtype=np.float64).reshape(4)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError(f'quaternion must be finite and non-zero, got {q.tolist()}')
    x, y, z, w = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rotation: ArrayLike) -> Float64Array:
    """Quaternion ``(x, y, z, w)`` with ``w >= 0`` of a 3×3 rotation matrix."""
    R = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    # Shepperd's method: branch on the largest diagonal term for numerical stability.
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s]
    out = np.asarray(q, dtype=np.float64)
    out /= np.linalg.norm(out)
    return -out if out[3] < 0 else out


def make_transform(rotation: ArrayLike, translation: ArrayLike) -> Float64Array:
    """4×4 transform from a 3×3 rotation and a translation (metres)."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    T[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return T


def rotation_z(yaw_rad: float) -> Float64Array:
    """3×3 rotation about +z by ``yaw_rad`` (counter-clockwise seen from above)."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_rpy(roll_rad: float, pitch_rad: float, yaw_rad: float) -> Float64Array:
    """3×3 rotation ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (REP 103 fixed-axis roll, pitch, yaw)."""
    cr, sr = np.cos(roll_rad), np.sin(roll_rad)
    cp, sp = np.cos(pitch_rad), np.sin(pitch_rad)
    Rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    Ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    return rotation_z(yaw_rad) @ Ry @ Rx


def invert_transform(T_a_b: ArrayLike) -> Float64Array:
    """``T_b_a`` from ``T_a_b`` using the rigid structure (no general matrix inverse)."""
    T = np.asarray(T_a_b, dtype=np.float64).reshape(4, 4)
    R_t = T[:3, :3].T
    return make_transform(R_t, -R_t @ T[:3, 3])


def transform_points(T_a_b: ArrayLike, xyz_b: ArrayLike) -> Float64Array:
    """Map N×3 points from frame ``b`` into frame ``a``; returns float64 N×3."""
    T = np.asarray(T_a_b, dtype=np.float64).reshape(4, 4)
    xyz = np.asarray(xyz_b, dtype=np.float64).reshape(-1, 3)
    return xyz @ T[:3, :3].T + T[:3, 3]


def interpolate_transform(T_0: ArrayLike, T_1: ArrayLike, fraction: float) -> Float64Array:
    """Transform a ``fraction`` of the way from ``T_0`` to ``T_1``.

    Linear in translation, spherical-linear in rotation; ``fraction`` 0 gives ``T_0``, 1 ``T_1``.
    Values outside [0, 1] extrapolate, which the tf buffer allows only within its tolerance.
    """
    A = np.asarray(T_0, dtype=np.float64)
    B = np.asarray(T_1, dtype=np.float64)
    qa, qb = matrix_to_quaternion(A[:3, :3]), matrix_to_quaternion(B[:3, :3])
    dot = float(np.dot(qa, qb))
    if dot < 0.0:  # take the short way round
        qb, dot = -qb, -dot
    if dot > 0.9995:  # nearly parallel: lerp is exact enough and avoids dividing by sin(~0)
        q = qa + fraction * (qb - qa)
    else:
        theta = np.arccos(dot)
        q = (np.sin((1 - fraction) * theta) * qa + np.sin(fraction * theta) * qb) / np.sin(theta)
    translation = A[:3, 3] + fraction * (B[:3, 3] - A[:3, 3])
    return make_transform(quaternion_to_matrix(q), translation)
