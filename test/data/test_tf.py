"""Tests for relkd_core.data.tf: a small offline tf buffer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from relkd_core.data.bag import MessageFactory, typestore
from relkd_core.data.tf import TfBuffer, stamp_ns, transform_from_msg
from relkd_core.errors import CalibrationError
from relkd_core.geometry.projection import R_BODY_OPTICAL
from relkd_core.geometry.se3 import (
    invert_transform,
    make_transform,
    rotation_rpy,
    rotation_z,
    transform_points,
)

SECOND = 1_000_000_000
MS = 1_000_000
T0, T1 = 10 * SECOND, 11 * SECOND

T_BASE_CAM = make_transform(rotation_rpy(0.01, -0.05, 0.1), [1.5, 0.2, 1.6])
T_CAM_OPTICAL = make_transform(R_BODY_OPTICAL, [0.0, 0.0, 0.0])
T_BASE_LIDAR = make_transform(rotation_z(0.02), [0.9, 0.0, 1.9])
T_ODOM_BASE_0 = make_transform(np.eye(3), [0.0, 0.0, 0.0])
T_ODOM_BASE_1 = make_transform(rotation_z(np.pi / 2), [4.0, 2.0, 0.0])


@pytest.fixture
def rig() -> TfBuffer:
    """A car moving in ``odom``: base_link → {cam → cam_optical, lidar}."""
    buffer = TfBuffer()
    buffer.add('base_link', 'cam', T_BASE_CAM)
    buffer.add('cam', 'cam_optical', T_CAM_OPTICAL)
    buffer.add('base_link', 'lidar', T_BASE_LIDAR)
    buffer.add('odom', 'base_link', T_ODOM_BASE_0, t_ns=T0)
    buffer.add('odom', 'base_link', T_ODOM_BASE_1, t_ns=T1)
    return buffer


def T_odom_base_mid() -> NDArray[np.float64]:
    return make_transform(rotation_z(np.pi / 4), [2.0, 1.0, 0.0])


def test_tf_buffer_static_chain(rig: TfBuffer) -> None:
    T_optical_lidar = rig.lookup('cam_optical', 'lidar', T0)
    expected = invert_transform(T_BASE_CAM @ T_CAM_OPTICAL) @ T_BASE_LIDAR
    np.testing.assert_allclose(T_optical_lidar, expected, atol=1e-12)


def test_tf_buffer_static_chain_maps_points(rig: TfBuffer) -> None:
    # A point 10 m ahead of the lidar lands ahead (+z) in the optical frame.
    xyz_optical = transform_points(rig.lookup('cam_optical', 'lidar', T0), [[10.0, 0.0, 0.0]])
    assert xyz_optical[0, 2] > 8.0


def test_tf_buffer_static_edges_need_no_stamp_coverage(rig: TfBuffer) -> None:
    np.testing.assert_allclose(rig.lookup('cam', 'lidar', 0),
                               rig.lookup('cam', 'lidar', 10**18), atol=0.0)


def test_tf_buffer_lookup_is_inverse_of_reverse_lookup(rig: TfBuffer) -> None:
    T_a_b = rig.lookup('cam_optical', 'lidar', T0)
    T_b_a = rig.lookup('lidar', 'cam_optical', T0)
    np.testing.assert_allclose(T_a_b @ T_b_a, np.eye(4), atol=1e-12)


def test_tf_buffer_lookup_same_frame_is_identity(rig: TfBuffer) -> None:
    np.testing.assert_array_equal(rig.lookup('lidar', 'lidar', T0), np.eye(4))


def test_tf_buffer_lookup_child_to_ancestor(rig: TfBuffer) -> None:
    np.testing.assert_allclose(rig.lookup('base_link', 'cam_optical', T0),
                               T_BASE_CAM @ T_CAM_OPTICAL, atol=1e-12)


def test_tf_buffer_dynamic_edge_exact_stamp(rig: TfBuffer) -> None:
    np.testing.assert_array_equal(rig.lookup('odom', 'base_link', T0), T_ODOM_BASE_0)
    np.testing.assert_array_equal(rig.lookup('odom', 'base_link', T1), T_ODOM_BASE_1)


def test_tf_buffer_dynamic_edge_interpolates_midpoint(rig: TfBuffer) -> None:
    T_mid = rig.lookup('odom', 'base_link', (T0 + T1) // 2)
    np.testing.assert_allclose(T_mid, T_odom_base_mid(), atol=1e-12)


def test_tf_buffer_dynamic_edge_interpolates_quarter(rig: TfBuffer) -> None:
    T = rig.lookup('odom', 'base_link', T0 + SECOND // 4)
    np.testing.assert_allclose(T, make_transform(rotation_z(np.pi / 8), [1.0, 0.5, 0.0]),
                               atol=1e-12)


def test_tf_buffer_dynamic_edge_samples_added_out_of_order() -> None:
    buffer = TfBuffer()
    buffer.add('odom', 'base_link', T_ODOM_BASE_1, t_ns=T1)
    buffer.add('odom', 'base_link', T_ODOM_BASE_0, t_ns=T0)
    np.testing.assert_allclose(buffer.lookup('odom', 'base_link', (T0 + T1) // 2),
                               T_odom_base_mid(), atol=1e-12)


def test_tf_buffer_dynamic_edge_same_stamp_replaces_sample() -> None:
    buffer = TfBuffer()
    buffer.add('odom', 'base_link', T_ODOM_BASE_0, t_ns=T0)
    buffer.add('odom', 'base_link', T_ODOM_BASE_1, t_ns=T0)
    np.testing.assert_array_equal(buffer.lookup('odom', 'base_link', T0), T_ODOM_BASE_1)


@pytest.mark.parametrize(
    ("t_ns", "expected"),
    [
        (T0 - 30 * MS, T_ODOM_BASE_0),
        (T0 - 50 * MS, T_ODOM_BASE_0),  # exactly at the tolerance
        (T1 + 30 * MS, T_ODOM_BASE_1),
    ],
    ids=['before', 'at-tolerance', 'after'],
)
def test_tf_buffer_extrapolation_within_tolerance_uses_nearest(
        rig: TfBuffer, t_ns: int, expected: NDArray[np.float64]) -> None:
    np.testing.assert_array_equal(rig.lookup('odom', 'base_link', t_ns), expected)


@pytest.mark.parametrize(
    ("t_ns", "message"),
    [
        (T0 - 51 * MS, r"no transform 'odom' → 'base_link' near t=9949000000 ns: samples "
                       r"cover 10000000000\.\.11000000000 ns \(51\.0 ms away\)"),
        (T1 + 2 * SECOND, r'\(2000\.0 ms away\)'),
    ],
    ids=['before', 'after'],
)
def test_tf_buffer_extrapolation_beyond_tolerance_raises(rig: TfBuffer, t_ns: int,
                                                         message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        rig.lookup('cam_optical', 'odom', t_ns)


def test_tf_buffer_extrapolation_tolerance_is_configurable() -> None:
    buffer = TfBuffer(max_extrapolation_ns=0)
    buffer.add('odom', 'base_link', T_ODOM_BASE_0, t_ns=T0)
    np.testing.assert_array_equal(buffer.lookup('odom', 'base_link', T0), T_ODOM_BASE_0)
    with pytest.raises(CalibrationError, match=r'\(0\.0 ms away\)'):
        buffer.lookup('odom', 'base_link', T0 + 1)


def test_tf_buffer_two_stamp_lookup_through_fixed_frame(rig: TfBuffer) -> None:
    # Lidar points taken at T0 mapped into the camera image taken at T1.
    T = rig.lookup('cam_optical', 'lidar', T1, source_t_ns=T0, fixed='odom')
    expected = (invert_transform(T_ODOM_BASE_1 @ T_BASE_CAM @ T_CAM_OPTICAL)
                @ T_ODOM_BASE_0 @ T_BASE_LIDAR)
    np.testing.assert_allclose(T, expected, atol=1e-12)


def test_tf_buffer_two_stamp_lookup_compensates_ego_motion(rig: TfBuffer) -> None:
    # A static world point seen by the lidar at T0 is where the camera sees it at T1.
    xyz_odom = np.array([[20.0, 5.0, 1.0]])
    xyz_lidar_0 = transform_points(invert_transform(T_ODOM_BASE_0 @ T_BASE_LIDAR), xyz_odom)
    xyz_optical_1 = transform_points(
        invert_transform(T_ODOM_BASE_1 @ T_BASE_CAM @ T_CAM_OPTICAL), xyz_odom)
    T = rig.lookup('cam_optical', 'lidar', T1, source_t_ns=T0, fixed='odom')
    np.testing.assert_allclose(transform_points(T, xyz_lidar_0), xyz_optical_1, atol=1e-12)


def test_tf_buffer_two_stamp_lookup_same_stamps_equals_plain(rig: TfBuffer) -> None:
    t_mid = (T0 + T1) // 2
    np.testing.assert_allclose(
        rig.lookup('cam_optical', 'lidar', t_mid, source_t_ns=t_mid, fixed='odom'),
        rig.lookup('cam_optical', 'lidar', t_mid), atol=1e-12)


@pytest.mark.parametrize("fixed", [None, 'base_link_typo', 'cam'])
def test_tf_buffer_two_stamp_lookup_needs_shared_fixed_frame(rig: TfBuffer,
                                                             fixed: str | None) -> None:
    with pytest.raises(CalibrationError, match=f"needs a fixed frame shared by both chains, "
                                               f"got fixed={fixed!r}"):
        rig.lookup('cam_optical', 'lidar', T1, source_t_ns=T0, fixed=fixed)


def test_tf_buffer_missing_link_names_both_chains(rig: TfBuffer) -> None:
    rig.add('map', 'radar', np.eye(4))
    message = (r"no tf path from 'radar' to 'cam_optical': 'radar' chain is radar → map, "
               r"'cam_optical' chain is cam_optical → cam → base_link → odom")
    with pytest.raises(CalibrationError, match=message):
        rig.lookup('cam_optical', 'radar', T0)


def test_tf_buffer_unknown_frame_has_no_path(rig: TfBuffer) -> None:
    with pytest.raises(CalibrationError, match=r"'ghost' chain is ghost, 'lidar' chain is "):
        rig.lookup('lidar', 'ghost', T0)


def test_tf_buffer_two_parents_rejected(rig: TfBuffer) -> None:
    with pytest.raises(CalibrationError,
                       match=r"frame 'cam' has two parents: 'base_link' and 'odom'"):
        rig.add('odom', 'cam', np.eye(4))


def test_tf_buffer_same_parent_again_replaces_static() -> None:
    buffer = TfBuffer()
    buffer.add('base_link', 'cam', np.eye(4))
    buffer.add('base_link', 'cam', T_BASE_CAM)
    np.testing.assert_array_equal(buffer.lookup('base_link', 'cam', 0), T_BASE_CAM)


def test_tf_buffer_loop_rejected() -> None:
    buffer = TfBuffer()
    buffer.add('a', 'b', np.eye(4))
    buffer.add('b', 'a', np.eye(4))
    with pytest.raises(CalibrationError, match=r"tf loop through frame 'a'"):
        buffer.lookup('a', 'c', 0)


def test_tf_buffer_add_message_static() -> None:
    factory = MessageFactory(typestore('humble'))
    msg = factory.tf_message([('base_link', 'cam', T_BASE_CAM), ('cam', 'cam_optical',
                              T_CAM_OPTICAL), ('base_link', 'lidar', T_BASE_LIDAR)], t_ns=T0)
    buffer = TfBuffer()
    buffer.add_message(msg, static=True)
    expected = invert_transform(T_BASE_CAM @ T_CAM_OPTICAL) @ T_BASE_LIDAR
    # Static: valid at any time, far from the message stamp.
    np.testing.assert_allclose(buffer.lookup('cam_optical', 'lidar', 0), expected, atol=1e-12)


def test_tf_buffer_add_message_dynamic_uses_header_stamp() -> None:
    factory = MessageFactory(typestore('humble'))
    buffer = TfBuffer()
    buffer.add_message(factory.tf_message([('odom', 'base_link', T_ODOM_BASE_0)], t_ns=T0))
    buffer.add_message(factory.tf_message([('odom', 'base_link', T_ODOM_BASE_1)], t_ns=T1))
    np.testing.assert_allclose(buffer.lookup('odom', 'base_link', (T0 + T1) // 2),
                               T_odom_base_mid(), atol=1e-12)
    with pytest.raises(CalibrationError, match='ms away'):
        buffer.lookup('odom', 'base_link', T0 - SECOND)


def test_tf_buffer_add_message_after_cdr_round_trip() -> None:
    store = typestore('humble')
    factory = MessageFactory(store)
    msg = factory.tf_message([('base_link', 'lidar', T_BASE_LIDAR)], t_ns=T0)
    decoded: Any = store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
    buffer = TfBuffer()
    buffer.add_message(decoded)
    np.testing.assert_allclose(buffer.lookup('base_link', 'lidar', T0), T_BASE_LIDAR,
                               atol=1e-12)


def test_transform_from_msg_round_trip() -> None:
    factory = MessageFactory(typestore('humble'))
    msg = factory.tf_message([('base_link', 'cam', T_BASE_CAM)], t_ns=0)
    np.testing.assert_allclose(transform_from_msg(msg.transforms[0].transform), T_BASE_CAM,
                               atol=1e-12)


@pytest.mark.parametrize("t_ns", [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789])
def test_stamp_ns_round_trip(t_ns: int) -> None:
    factory = MessageFactory(typestore('humble'))
    assert stamp_ns(factory.header(t_ns, 'x').stamp) == t_ns
