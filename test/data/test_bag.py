"""Tests for relkd_core.data.bag: atomic bag writing, reading, and message building."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from rosbags.highlevel import AnyReaderError
from rosbags.interfaces import ConnectionExtRosbag2, QosDurability, QosReliability

from relkd_core.data.bag import (
    BagWriter,
    MessageFactory,
    Storage,
    open_bags,
    read_messages,
    typestore,
)
from relkd_core.data.image import image_to_array
from relkd_core.data.pointcloud import pointcloud_to_array
from relkd_core.data.tf import TfBuffer
from relkd_core.errors import BagError
from relkd_core.geometry.se3 import make_transform, rotation_rpy, rotation_z
from relkd_core.outputs import MARKER_NAME, output_kind

STORAGES: list[Storage] = ['mcap', 'sqlite3']
SECOND = 1_000_000_000
T_BASE_LIDAR = make_transform(rotation_rpy(0.0, 0.02, 0.01), [0.9, 0.0, 1.9])
POINT_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', '<f4'),
                        ('label', '<u2'), ('_pad', 'V2')])
POINTCLOUD2, TFMESSAGE, IMAGE = ('sensor_msgs/msg/PointCloud2', 'tf2_msgs/msg/TFMessage',
                                 'sensor_msgs/msg/Image')


def all_entries(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden ones included."""
    return sorted(p.name for p in folder.iterdir())


def random_points(count: int, seed: int) -> NDArray[np.void]:
    rng = np.random.default_rng(seed)
    points = np.zeros(count, POINT_DTYPE)
    for name in ('x', 'y', 'z', 'intensity'):
        points[name] = rng.normal(size=count)
    points['label'] = rng.integers(0, 20, count)
    return points


def odom_pose(frame: int) -> NDArray[np.float64]:
    return make_transform(rotation_z(0.1 * frame), [2.0 * frame, 0.5 * frame, 0.0])


def write_tiny_bag(path: Path, storage: Storage, num_frames: int = 3) -> dict[str, Any]:
    """3 frames of a lidar and odometry, plus one latched static transform and one image."""
    clouds = [random_points(10 + i, seed=i) for i in range(num_frames)]
    grey = np.random.default_rng(0).integers(0, 255, (4, 6), dtype=np.uint8, endpoint=True)
    with BagWriter(path, storage=storage) as writer:
        factory = writer.factory
        writer.add_topic('/tf_static', TFMESSAGE, latched=True)
        writer.add_topic('/tf', TFMESSAGE)
        writer.add_topic('/lidar/points', POINTCLOUD2)
        writer.add_topic('/cam/image_raw', IMAGE)
        writer.write('/tf_static', SECOND,
                     factory.tf_message([('base_link', 'lidar', T_BASE_LIDAR)], SECOND))
        for i, cloud in enumerate(clouds):
            t_ns = SECOND + i * 100_000_000
            writer.write('/tf', t_ns, factory.tf_message([('odom', 'base_link', odom_pose(i))],
                                                         t_ns))
            writer.write('/lidar/points', t_ns + 1, factory.point_cloud(cloud, t_ns, 'lidar'))
        writer.write('/cam/image_raw', SECOND + 5, factory.image(grey, 'mono8', SECOND, 'cam'))
        counts = dict(writer.message_counts)
    return {'clouds': clouds, 'grey': grey, 'counts': counts}


@pytest.fixture(params=STORAGES)
def tiny_bag(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / f'tiny_{request.param}'
    return path, write_tiny_bag(path, request.param)


# --- typestore and messages --------------------------------------------------------------------

@pytest.mark.parametrize("distro", ['humble', 'jazzy', 'kilted'])
def test_typestore_known_distros_have_sensor_types(distro: str) -> None:
    types = typestore(distro).types
    for msgtype in (POINTCLOUD2, TFMESSAGE, IMAGE, 'sensor_msgs/msg/CompressedImage',
                    'sensor_msgs/msg/CameraInfo'):
        assert msgtype in types


def test_message_factory_header_splits_stamp() -> None:
    header = MessageFactory(typestore()).header(1_700_000_000_123_456_789, 'lidar')
    assert (header.stamp.sec, header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert header.frame_id == 'lidar'


def test_message_factory_camera_info_layout() -> None:
    K = np.array([[500.0, 0.0, 320.0], [0.0, 505.0, 240.0], [0.0, 0.0, 1.0]])
    info = MessageFactory(typestore()).camera_info(K, 640, 480, 0, 'cam_optical')
    assert (info.width, info.height, info.distortion_model) == (640, 480, 'plumb_bob')
    np.testing.assert_array_equal(info.k, K.reshape(-1))
    np.testing.assert_array_equal(info.p.reshape(3, 4), np.hstack([K, np.zeros((3, 1))]))
    np.testing.assert_array_equal(info.d, np.zeros(5))


# --- writing and reading back ------------------------------------------------------------------

def test_bag_writer_leaves_only_the_bag(tiny_bag: tuple[Path, dict[str, Any]]) -> None:
    path, _ = tiny_bag
    assert all_entries(path.parent) == [path.name]
    suffix = '.mcap' if path.name.endswith('mcap') else '.db3'
    assert all_entries(path) == sorted(['metadata.yaml', path.name + suffix])


def test_bag_writer_message_counts(tiny_bag: tuple[Path, dict[str, Any]]) -> None:
    _, written = tiny_bag
    assert written['counts'] == {'/tf_static': 1, '/tf': 3, '/lidar/points': 3,
                                 '/cam/image_raw': 1}


def test_open_bags_topics_and_counts(tiny_bag: tuple[Path, dict[str, Any]]) -> None:
    path, written = tiny_bag
    reader = open_bags([path])
    try:
        counts = {c.topic: c.msgcount for c in reader.connections}
        types = {c.topic: c.msgtype for c in reader.connections}
    finally:
        reader.close()
    assert counts == written['counts']
    assert types == {'/tf_static': TFMESSAGE, '/tf': TFMESSAGE, '/lidar/points': POINTCLOUD2,
                     '/cam/image_raw': IMAGE}


def test_read_messages_in_record_order(tiny_bag: tuple[Path, dict[str, Any]]) -> None:
    path, _ = tiny_bag
    with open_bags([path]) as reader:
        stamps = [(topic, t_ns) for topic, t_ns, _ in read_messages(reader)]
    assert stamps == [
        ('/tf_static', SECOND), ('/tf', SECOND), ('/lidar/points', SECOND + 1),
        ('/cam/image_raw', SECOND + 5),
        ('/tf', SECOND + 100_000_000), ('/lidar/points', SECOND + 100_000_001),
        ('/tf', SECOND + 200_000_000), ('/lidar/points', SECOND + 200_000_001),
    ]


def test_read_messages_point_cloud_values(tiny_bag: tuple[Path, dict[str, Any]]) -> None:
    path, written = tiny_bag
    with open_bags([path]) as reader:
        messages = list(read_messages(reader, ['/lidar/points']))
    assert [topic for topic, _, _ in messages] == ['/lidar/points'] * 3
    for (_, _, msg), cloud in zip(messages, written['clouds'], strict=True):
        assert msg.header.frame_id == 'lidar'
        points = pointcloud_to_array(msg)
        assert points.dtype.names == ('x', 'y', 'z', 'intensity', 'label')
        for name in points.dtype.names:
            np.testing.assert_array_equal(points[name], cloud[name])


def test_read_messages_tf_values(tiny_bag: tuple[Path, dict[str, Any]]) -> None:
    path, _ = tiny_bag
    buffer = TfBuffer()
    with open_bags([path]) as reader:
        for topic, _, msg in read_messages(reader, ['/tf', '/tf_static']):
            buffer.add_message(msg, static=topic == '/tf_static')
    np.testing.assert_allclose(buffer.lookup('base_link', 'lidar', 0), T_BASE_LIDAR,
                               atol=1e-12)
    np.testing.assert_allclose(buffer.lookup('odom', 'base_link', SECOND + 200_000_000),
                               odom_pose(2), atol=1e-12)
    np.testing.assert_allclose(buffer.lookup('odom', 'lidar', SECOND + 100_000_000),
                               odom_pose(1) @ T_BASE_LIDAR, atol=1e-12)


def test_read_messages_image_values(tiny_bag: tuple[Path, dict[str, Any]]) -> None:
    path, written = tiny_bag
    with open_bags([path]) as reader:
        [(_, _, msg)] = list(read_messages(reader, ['/cam/image_raw']))
    np.testing.assert_array_equal(image_to_array(msg), written['grey'])


def test_open_bags_with_statement_closes_reader(tiny_bag: tuple[Path, dict[str, Any]]) -> None:
    # open_bags returns an opened reader; entering it must not open it a second time.
    path, _ = tiny_bag
    reader = open_bags([path])
    with reader as entered:
        assert entered is reader
        assert len(list(read_messages(reader, ['/tf']))) == 3
    with pytest.raises(AnyReaderError, match='AnyReader is not open'):
        list(read_messages(reader))


def test_open_bags_reads_two_bags_together(tmp_path: Path) -> None:
    write_tiny_bag(tmp_path / 'a', 'mcap', num_frames=2)
    write_tiny_bag(tmp_path / 'b', 'sqlite3', num_frames=1)
    with open_bags([tmp_path / 'a', tmp_path / 'b']) as reader:
        clouds = list(read_messages(reader, ['/lidar/points']))
    assert len(clouds) == 3


@pytest.mark.parametrize("storage", STORAGES)
def test_bag_writer_version_9_reads_back(tmp_path: Path, storage: Storage) -> None:
    factory = MessageFactory(typestore())
    msg = factory.tf_message([('odom', 'base_link', odom_pose(1))], 7)
    with BagWriter(tmp_path / 'v9', storage=storage, version=9) as writer:
        writer.add_topic('/tf', TFMESSAGE)
        writer.write('/tf', 7, msg)
    with open_bags([tmp_path / 'v9']) as reader:
        [(topic, t_ns, decoded)] = list(read_messages(reader))
    assert (topic, t_ns, decoded.transforms[0].child_frame_id) == ('/tf', 7, 'base_link')


def test_bag_writer_latched_topic_offered_transient_local(
        tiny_bag: tuple[Path, dict[str, Any]]) -> None:
    path, _ = tiny_bag
    profiles = {}
    with open_bags([path]) as reader:
        for connection in reader.connections:
            assert isinstance(connection.ext, ConnectionExtRosbag2)
            profiles[connection.topic] = connection.ext.offered_qos_profiles
    [latched] = profiles['/tf_static']
    assert latched.durability == QosDurability.TRANSIENT_LOCAL
    assert latched.reliability == QosReliability.RELIABLE
    assert latched.depth == 1
    # Other topics carry no offered profile: the player falls back to its defaults.
    assert profiles['/tf'] == []
    assert profiles['/lidar/points'] == []


# --- atomicity ---------------------------------------------------------------------------------

@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("error_type", [RuntimeError, KeyboardInterrupt])
def test_bag_writer_exception_leaves_nothing(tmp_path: Path, storage: Storage,
                                             error_type: type[BaseException]) -> None:
    with pytest.raises(error_type, match='interrupted'), \
            BagWriter(tmp_path / 'bag', storage=storage) as writer:
        writer.add_topic('/tf', TFMESSAGE)
        writer.write('/tf', 1, writer.factory.tf_message([('a', 'b', np.eye(4))], 1))
        assert len(all_entries(tmp_path)) == 1  # the hidden temporary folder
        raise error_type('interrupted')
    assert all_entries(tmp_path) == []


def test_bag_writer_abort_leaves_nothing(tmp_path: Path) -> None:
    writer = BagWriter(tmp_path / 'bag')
    with writer:
        writer.add_topic('/tf', TFMESSAGE)
        writer.abort()
    assert all_entries(tmp_path) == []


def test_bag_writer_temporary_folder_is_hidden(tmp_path: Path) -> None:
    with BagWriter(tmp_path / 'bag'):
        [temporary] = all_entries(tmp_path)
        assert temporary.startswith('.bag.')
        assert not (tmp_path / 'bag').exists()
    assert all_entries(tmp_path) == ['bag']


def test_bag_writer_sweeps_the_staging_of_dead_writers_and_marks_its_kind(
        tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    with BagWriter(tmp_path / 'other'):  # a live writer of another bag, left alone
        [live] = all_entries(tmp_path)
        stale = tmp_path / live.replace('.other.', '.bag.').replace(
            f'.{os.getpid()}.', f'.{dead.pid}.')
        stale.mkdir()  # the staging folder of a writer killed mid-bag
        (stale / 'bag').mkdir()
        (stale / 'bag' / 'bag.mcap').write_bytes(b'\0' * 1000)
        with BagWriter(tmp_path / 'bag', kind='synth-bag') as writer:
            writer.add_topic('/tf', TFMESSAGE)
        assert all_entries(tmp_path) == sorted([live, 'bag'])
    assert output_kind(tmp_path / 'bag') == 'synth-bag'
    assert all_entries(tmp_path / 'bag') == [MARKER_NAME, 'bag.mcap', 'metadata.yaml']


def test_bag_writer_undeclared_topic_aborts_bag(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"topic '/tf' was not declared with add_topic\(\)"), \
            BagWriter(tmp_path / 'bag') as writer:
        writer.add_topic('/tf_static', TFMESSAGE, latched=True)
        writer.write('/tf', 1, writer.factory.tf_message([('a', 'b', np.eye(4))], 1))
    assert all_entries(tmp_path) == []


# --- bad inputs --------------------------------------------------------------------------------

def test_bag_writer_rejects_existing_folder(tmp_path: Path) -> None:
    (tmp_path / 'bag').mkdir()
    with pytest.raises(BagError, match=r'bag already exists; choose a new path or remove it'):
        BagWriter(tmp_path / 'bag')
    assert all_entries(tmp_path / 'bag') == []


def test_bag_writer_rejects_existing_file(tmp_path: Path) -> None:
    (tmp_path / 'bag').write_text('keep me')
    with pytest.raises(BagError, match='already exists'):
        BagWriter(tmp_path / 'bag', storage='sqlite3')
    assert (tmp_path / 'bag').read_text() == 'keep me'


def test_bag_writer_rejects_missing_parent(tmp_path: Path) -> None:
    writer = BagWriter(tmp_path / 'missing' / 'bag')
    with pytest.raises(BagError, match=r'cannot write .*bag: folder .*missing does not exist'):
        writer.__enter__()
    assert all_entries(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({'distro': 'rolling'},
         r"unknown ROS 2 distro 'rolling'; expected one of \['humble', 'jazzy', 'kilted'\]"),
        ({'distro': 'Humble'}, r"unknown ROS 2 distro 'Humble'"),
        ({'storage': 'rosbag1'}, r"storage must be 'mcap' or 'sqlite3', got 'rosbag1'"),
    ],
)
def test_bag_writer_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(BagError, match=message):
        BagWriter(tmp_path / 'bag', **kwargs)
    assert all_entries(tmp_path) == []


def test_typestore_rejects_unknown_distro() -> None:
    with pytest.raises(BagError, match=r"unknown ROS 2 distro 'foxy'"):
        typestore('foxy')


@pytest.mark.parametrize("method", ['add_topic', 'write'])
def test_bag_writer_requires_with_statement(tmp_path: Path, method: str) -> None:
    writer = BagWriter(tmp_path / 'bag')
    with pytest.raises(BagError, match=r'BagWriter is not open; use it in a with-statement'):
        if method == 'add_topic':
            writer.add_topic('/tf', TFMESSAGE)
        else:
            writer.write('/tf', 0, None)


def test_bag_writer_closed_writer_cannot_write(tmp_path: Path) -> None:
    with BagWriter(tmp_path / 'bag') as writer:
        writer.add_topic('/tf', TFMESSAGE)
    with pytest.raises(BagError, match='not open'):
        writer.write('/tf', 0, writer.factory.tf_message([], 0))


def test_open_bags_rejects_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r'bag .*nowhere does not exist'):
        open_bags([tmp_path / 'nowhere'])


def test_open_bags_rejects_unknown_distro(tiny_bag: tuple[Path, dict[str, Any]]) -> None:
    path, _ = tiny_bag
    with pytest.raises(BagError, match=r"unknown ROS 2 distro 'melodic'"):
        open_bags([path], distro='melodic')


def _empty_folder(root: Path) -> Path:
    (root / 'bag').mkdir()
    return root / 'bag'


def _garbage_metadata(root: Path) -> Path:
    (root / 'bag').mkdir()
    (root / 'bag' / 'metadata.yaml').write_text('just: [some, yaml]\n')
    return root / 'bag'


def _unparsable_metadata(root: Path) -> Path:
    (root / 'bag').mkdir()
    (root / 'bag' / 'metadata.yaml').write_text(': : not yaml [\n')
    return root / 'bag'


def _storage_file_missing(root: Path) -> Path:
    write_tiny_bag(root / 'bag', 'mcap', num_frames=1)
    (root / 'bag' / 'bag.mcap').unlink()
    return root / 'bag'


def _junk_mcap(root: Path) -> Path:
    (root / 'junk.mcap').write_bytes(b'not an mcap file')
    return root / 'junk.mcap'


def _junk_db3(root: Path) -> Path:
    (root / 'junk.db3').write_bytes(b'not a database')
    return root / 'junk.db3'


def _unknown_suffix(root: Path) -> Path:
    (root / 'notes.txt').write_text('hello')
    return root / 'notes.txt'


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_empty_folder, r'cannot open bag .*bag: Expected metadata file'),
        (_garbage_metadata, r'cannot open bag .*bag: .*metadata'),
        (_unparsable_metadata, r'cannot open bag .*bag: '),
        (_storage_file_missing, r'cannot open bag .*bag: .*missing'),
        (_junk_mcap, r'cannot open bag .*junk\.mcap: '),
        (_junk_db3, r'cannot open bag .*junk\.db3: '),
        (_unknown_suffix, r"cannot open bag .*notes\.txt: Unrecognized storage format '\.txt'"),
    ],
    ids=['empty-folder', 'garbage-metadata', 'unparsable-metadata', 'storage-file-missing',
         'junk-mcap', 'junk-db3', 'unknown-suffix'],
)
def test_open_bags_rejects_non_bag(tmp_path: Path, build: Any, message: str) -> None:
    with pytest.raises(BagError, match=message):
        open_bags([build(tmp_path)])


def test_open_bags_rejects_empty_list() -> None:
    with pytest.raises(BagError, match='at least one path'):
        open_bags([])
