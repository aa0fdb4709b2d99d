"""Camera ↔ lidar transforms of the node: the tf2 adapter (against a stand-in tf2 buffer: tf2_ros
is not pip-installable) and the built-in buffer."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('geometry_msgs.msg')

from relkd_core.errors import CalibrationError
from relkd_core.geometry.se3 import make_transform, rotation_z
from relkd_ros import transforms
from relkd_ros.transforms import Tf2Transforms, TfBufferTransforms


class _TransformError(Exception):
    pass


class _FakeBuffer:
    """Answers lookups from a table keyed by (target, source, stamps...)."""

    def __init__(self, answers: dict[tuple[Any, ...], np.ndarray]) -> None:
        self.answers = answers
        self.static: list[Any] = []
        self.calls: list[tuple[Any, ...]] = []

    def set_transform_static(self, stamped: Any, authority: str) -> None:
        self.static.append((stamped, authority))

    def _answer(self, key: tuple[Any, ...]) -> Any:
        self.calls.append(key)
        if key not in self.answers:
            raise _TransformError(f'"{key[0]}" passed to lookupTransform does not exist')
        return transforms._transform_stamped('a', 'b', self.answers[key])

    def lookup_transform(self, target: str, source: str, time: Any) -> Any:
        return self._answer((target, source, time.nanoseconds))

    def lookup_transform_full(self, target: str, target_time: Any, source: str,
                              source_time: Any, fixed: str) -> Any:
        return self._answer((target, target_time.nanoseconds, source, source_time.nanoseconds,
                             fixed))


@pytest.fixture
def fake_tf2(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType('tf2_ros')
    module.TransformException = _TransformError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, 'tf2_ros', module)


def test_tf2_transforms_look_up_at_the_scan_stamp_and_add_static_parameters(
        fake_tf2: None) -> None:
    T = make_transform(rotation_z(0.3), [1.0, 2.0, 3.0])
    buffer = _FakeBuffer({('cam', 'lidar', 5_000_000_123): T})
    static = [('base', 'lidar', make_transform(np.eye(3), [0.0, 0.0, 1.8]))]
    source = Tf2Transforms(None, static, buffer=buffer)
    np.testing.assert_allclose(source.lookup('cam', 'lidar', 7, 5_000_000_123), T, atol=1e-9)
    (stamped, authority), = buffer.static
    assert authority == 'static_transforms parameter'
    assert (stamped.header.frame_id, stamped.child_frame_id) == ('base', 'lidar')
    assert stamped.transform.translation.z == 1.8 and stamped.transform.rotation.w == 1.0


def test_tf2_transforms_with_a_fixed_frame_use_both_stamps(fake_tf2: None) -> None:
    T = make_transform(rotation_z(-0.2), [0.5, 0.0, 0.0])
    buffer = _FakeBuffer({('cam', 10, 'lidar', 20, 'odom'): T})
    source = Tf2Transforms(None, [], fixed_frame='odom', buffer=buffer)
    np.testing.assert_allclose(source.lookup('cam', 'lidar', 10, 20), T, atol=1e-9)


def test_tf2_transforms_turn_tf2_errors_into_calibration_errors(fake_tf2: None) -> None:
    source = Tf2Transforms(None, [], buffer=_FakeBuffer({}))
    with pytest.raises(CalibrationError, match="tf2: no transform 'lidar' → 'cam'"):
        source.lookup('cam', 'lidar', 1, 1)


def test_builtin_transforms_compensate_ego_motion_through_the_fixed_frame() -> None:
    """Lidar and camera on a car moving +x at 10 m/s; camera stamp 0.1 s after the scan's."""

    class _Node:
        def create_subscription(self, *args: Any, **kwargs: Any) -> object:
            return object()

        def destroy_subscription(self, subscription: object) -> None:
            pass

    source = TfBufferTransforms(_Node(), [], fixed_frame='odom')
    buffer = source.buffer
    for t_ns, x in ((0, 0.0), (100_000_000, 1.0)):
        buffer.add('odom', 'base', make_transform(np.eye(3), [x, 0.0, 0.0]), t_ns)
    buffer.add('base', 'lidar', np.eye(4))
    buffer.add('base', 'cam', np.eye(4))
    T = source.lookup('cam', 'lidar', 100_000_000, 0)
    # A point 5 m ahead of the lidar at scan time is 4 m ahead of the camera 0.1 s later.
    np.testing.assert_allclose(T @ [5.0, 0.0, 0.0, 1.0], [4.0, 0.0, 0.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(TfBufferTransforms(_Node(), []).buffer.lookup(
        'cam', 'cam', 0), np.eye(4))
    source.close()


def test_transform_source_prefers_tf2_when_importable(monkeypatch: pytest.MonkeyPatch,
                                                      fake_tf2: None) -> None:
    created: list[Any] = []
    monkeypatch.setattr(transforms, 'Tf2Transforms',
                        lambda node, static, fixed: created.append((static, fixed)) or 'tf2')
    assert transforms.transform_source(None, [], 'odom') == 'tf2' and created == [([], 'odom')]
    monkeypatch.delitem(sys.modules, 'tf2_ros')
    monkeypatch.setattr(transforms, 'tf2_available', lambda: False)
    assert isinstance(transforms.transform_source(None, [], ''), TfBufferTransforms)
