"""The node's cameras without ROS: image buffering, CameraInfo, and the overlay drawn on the
nearest image."""

from __future__ import annotations

import numpy as np
import pytest

from relkd_core.data.bag import MessageFactory, typestore
from relkd_core.errors import CalibrationError, DataError
from relkd_core.infer.cameras import OverlayCamera, overlay_topic, same_camera_info

FACTORY = MessageFactory(typestore())
K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])


def _identity(target: str, source: str, target_t_ns: int, source_t_ns: int) -> np.ndarray:
    return np.eye(4)


@pytest.mark.parametrize(('topic', 'expected'), [
    ('/cam/image_raw/compressed', '/cam/image_raw/overlay'),
    ('/cam/image_raw', '/cam/image_raw/overlay'),
    ('/cam/', '/cam/overlay'),
])
def test_overlay_topic_replaces_the_transport(topic: str, expected: str) -> None:
    assert overlay_topic(topic, 'overlay') == expected


def test_overlay_camera_draws_on_the_nearest_image_within_the_slop() -> None:
    camera = OverlayCamera('/cam/image_raw')
    camera.set_info(FACTORY.camera_info(K, 64, 48, 0, 'cam'))
    for t_ns, value in ((1_000, 10), (2_000, 20)):
        camera.add_image(t_ns, FACTORY.image(np.full((48, 64, 3), value, np.uint8), 'rgb8',
                                             t_ns, 'cam'))
    xyz = np.array([[0.0, 0.0, 5.0]], np.float32)  # straight ahead: pixel (32, 24)
    colors = np.array([[255, 0, 0]], np.uint8)
    overlay = camera.draw(xyz, np.array([0], np.uint16), colors, 'cam', 1_900, 500, _identity)
    assert overlay is not None and overlay.header.stamp.nanosec == 2_000
    assert overlay.rgb[24, 32].tolist() == [255, 0, 0] and overlay.rgb[0, 0].tolist() == [20] * 3
    assert camera.draw(xyz, np.array([0], np.uint16), colors, 'cam', 5_000, 500,
                       _identity) is None


def test_overlay_camera_without_info_draws_nothing_and_keeps_a_good_info() -> None:
    camera = OverlayCamera('/cam/image_raw')
    camera.add_image(0, FACTORY.image(np.zeros((48, 64, 3), np.uint8), 'rgb8', 0, 'cam'))
    assert camera.draw(np.zeros((1, 3), np.float32), np.zeros(1, np.uint16),
                       np.zeros((1, 3), np.uint8), 'cam', 0, 10, _identity) is None
    good = FACTORY.camera_info(K, 64, 48, 0, 'cam')
    camera.set_info(good)
    broken = FACTORY.camera_info(K * 0, 64, 48, 0, 'cam')
    with pytest.raises((CalibrationError, ValueError)):
        camera.set_info(broken)
    assert camera.info is good and same_camera_info(good, FACTORY.camera_info(K, 64, 48, 9,
                                                                               'cam'))
    assert not same_camera_info(good, broken)


def test_overlay_camera_reports_an_unreadable_image() -> None:
    camera = OverlayCamera('/cam/image_raw')
    camera.set_info(FACTORY.camera_info(K, 64, 48, 0, 'cam'))
    image = FACTORY.image(np.zeros((48, 64, 3), np.uint8), 'rgb8', 0, 'cam')
    image.encoding = 'yuv422'
    camera.add_image(0, image)
    with pytest.raises(DataError, match="unsupported image encoding 'yuv422'"):
        camera.draw(np.zeros((1, 3), np.float32), np.zeros(1, np.uint16),
                    np.zeros((1, 3), np.uint8), 'cam', 0, 10, _identity)
