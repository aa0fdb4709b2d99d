"""``relkd-label``'s real ``main(argv)`` on tiny synthetic bags (MCAP and sqlite3)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bagtools import rewrite_bag
from infer.checkpoints import STORED_NAMES, tiny_checkpoint, write_tiny_checkpoint
from rosbags.highlevel import AnyReader
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from relkd_core.cli.label import main
from relkd_core.data.scan import ScanInput, pointfields, read_scan, stamp_ns
from relkd_core.infer import LABELED_POINT_DTYPE, Labeler, entry_colors
from relkd_core.infer.label_bag import LABELED_BAG_KIND
from relkd_core.infer.legend import LEGEND_NAMESPACE
from relkd_core.infer.topics import LABELED_TOPIC, LEGEND_TOPIC
from relkd_core.models.distilled import save_checkpoint
from relkd_core.outputs import MARKER_NAME, output_kind
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.record import record_drive
from relkd_core.sim.rig import RIGS
from relkd_ros.params import SegmentParams

LIDAR = RIGS['nuscenes'].lidar.topic
CUSTOM_TYPE = 'relkd_test/msg/Tag'
CUSTOM_QOS = Qos(history=QosHistory.KEEP_LAST, depth=7, reliability=QosReliability.BEST_EFFORT,
                 durability=QosDurability.VOLATILE, deadline=QosTime(0, 0),
                 lifespan=QosTime(0, 0), liveliness=QosLiveliness.AUTOMATIC,
                 liveliness_lease_duration=QosTime(0, 0), avoid_ros_namespace_conventions=False)
# Preset synth-nuscenes settings, which the runs below use.
INTENSITY_SCALE = 1 / 255
MIN_RANGE_M, MAX_RANGE_M = 1.0, 70.0


def _raw(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    """Every message of a bag: topic → [(record time, raw bytes)] in record order."""
    messages: dict[str, list[tuple[int, bytes]]] = {}
    with AnyReader([path]) as reader:
        for connection, t_ns, raw in reader.messages():
            messages.setdefault(connection.topic, []).append((t_ns, bytes(raw)))
    return messages


def _connections(path: Path) -> dict[str, tuple[str, str, str, list[Any]]]:
    """topic → (type, definition, type hash, offered QoS)."""
    with AnyReader([path]) as reader:
        return {c.topic: (c.msgtype, c.msgdef.data, c.digest, c.ext.offered_qos_profiles)
                for c in reader.connections}


def _write_input_bag(path: Path, storage: str) -> Path:
    """A 2-scan lidar-only synthetic drive plus a topic of a type no typestore knows."""
    drive_bag = path.with_name(f'{path.name}_drive')
    record_drive(SyntheticDrive(RIGS['nuscenes'], 2, seed=7, cameras=False), drive_bag,
                 storage=storage)  # type: ignore[arg-type]
    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg('string name\nuint32 count', CUSTOM_TYPE))
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with AnyReader([drive_bag]) as reader, Writer(path, version=8,
                                                  storage_plugin=plugin) as writer:
        out = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store,
                                           offered_qos_profiles=c.ext.offered_qos_profiles)
               for c in reader.connections}
        tags = writer.add_connection('/tags', CUSTOM_TYPE, typestore=store,
                                     offered_qos_profiles=[CUSTOM_QOS])
        for i, (connection, t_ns, raw) in enumerate(reader.messages()):
            writer.write(out[connection.id], t_ns, raw)
            tag = store.types[CUSTOM_TYPE](name=f'tag {i}', count=i)
            writer.write(tags, t_ns + 1, store.serialize_cdr(tag, CUSTOM_TYPE))
    return path


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp('label') / 'student.pt')


@pytest.fixture(scope='module', params=['mcap', 'sqlite3'])
def labeled(request: pytest.FixtureRequest, checkpoint: Path,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(input bag, labeled bag, storage) from one real run of main()."""
    storage = request.param
    root = tmp_path_factory.mktemp(f'label_{storage}')
    bag = _write_input_bag(root / 'input', storage)
    out = root / 'labeled'
    code = main(['--checkpoint', str(checkpoint), '--bag', str(bag), '--out', str(out),
                 '--preset', 'synth-nuscenes'])
    assert code == 0
    return bag, out, storage


def test_label_copies_every_message_byte_identical(labeled: tuple[Path, Path, str]) -> None:
    bag, out, storage = labeled
    before, after = _raw(bag), _raw(out)
    assert sorted(after) == sorted([*before, f'/{LABELED_TOPIC}', f'/{LEGEND_TOPIC}'])
    for topic, messages in before.items():
        assert after[topic] == messages, topic
    assert len(before['/tags']) == sum(len(m) for t, m in before.items() if t != '/tags') == 5
    suffix = '.mcap' if storage == 'mcap' else '.db3'
    assert [p.suffix for p in out.iterdir()
            if p.name not in ('metadata.yaml', MARKER_NAME)] == [suffix]
    assert output_kind(out) == LABELED_BAG_KIND


def test_label_keeps_types_definitions_and_qos(labeled: tuple[Path, Path, str]) -> None:
    bag, out, _ = labeled
    before, after = _connections(bag), _connections(out)
    for topic, connection in before.items():
        assert after[topic] == connection, topic
    assert after['/tags'][3] == [CUSTOM_QOS]
    assert after['/tf_static'][3][0].durability == QosDurability.TRANSIENT_LOCAL
    assert after[f'/{LEGEND_TOPIC}'][3][0].durability == QosDurability.TRANSIENT_LOCAL


def test_label_writes_one_labeled_cloud_per_scan(labeled: tuple[Path, Path, str]) -> None:
    bag, out, _ = labeled
    labeler = Labeler(tiny_checkpoint(), min_range_m=MIN_RANGE_M, max_range_m=MAX_RANGE_M)
    with AnyReader([bag]) as reader:
        scans = [(t_ns, reader.deserialize(raw, c.msgtype))
                 for c, t_ns, raw in reader.messages() if c.topic == LIDAR]
    with AnyReader([out]) as reader:
        clouds = [(t_ns, reader.deserialize(raw, c.msgtype)) for c, t_ns, raw in
                  reader.messages() if c.topic == f'/{LABELED_TOPIC}']
    assert len(clouds) == len(scans) == 2
    for (scan_t_ns, scan), (cloud_t_ns, cloud) in zip(scans, clouds, strict=True):
        assert cloud_t_ns == scan_t_ns
        assert stamp_ns(cloud.header.stamp) == stamp_ns(scan.header.stamp)
        assert cloud.header.frame_id == scan.header.frame_id == RIGS['nuscenes'].lidar.frame_id
        assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == pointfields(
            LABELED_POINT_DTYPE)
        assert (cloud.height, cloud.width, cloud.point_step) == (1, scan.width, 28)
        points = np.frombuffer(cloud.data, LABELED_POINT_DTYPE)
        xyzi = read_scan(scan, ScanInput(intensity_scale=INTENSITY_SCALE)).points
        expected = labeler.label(xyzi)
        np.testing.assert_array_equal(points['x'], xyzi[:, 0])
        np.testing.assert_array_equal(points['intensity'], xyzi[:, 3])
        np.testing.assert_array_equal(points['label'], expected.labels)
        np.testing.assert_allclose(points['score'], expected.scores, atol=1e-5)
        assert set(np.unique(points['label'])) <= {0, 1, 2, 0xFFFF}


def test_label_writes_the_legend_once(labeled: tuple[Path, Path, str]) -> None:
    _, out, _ = labeled
    with AnyReader([out]) as reader:
        legends = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                   if c.topic == f'/{LEGEND_TOPIC}']
    assert len(legends) == 1
    markers = legends[0].markers
    assert [m.ns for m in markers] == [LEGEND_NAMESPACE] * 4
    assert [m.action for m in markers] == [3, 0, 0, 0]  # DELETEALL, then ADD
    assert [m.text for m in markers[1:]] == [f'{i}: {n}' for i, n in enumerate(STORED_NAMES)]
    colors = entry_colors(Labeler(tiny_checkpoint()).vocabulary)
    np.testing.assert_allclose([(m.color.r, m.color.g, m.color.b) for m in markers[1:]],
                               colors / 255.0)


def test_label_uses_the_given_vocabulary(checkpoint: Path, tmp_path: Path) -> None:
    bag = _write_input_bag(tmp_path / 'input', 'mcap')
    out = tmp_path / 'labeled'
    assert main(['--checkpoint', str(checkpoint), '--bag', str(bag), '--out', str(out),
                 '--lidar-topic', LIDAR, '--vocabulary', 'road', 'car', '--storage',
                 'sqlite3']) == 0
    labeler = Labeler(tiny_checkpoint(), ['road', 'car'])
    with AnyReader([bag]) as reader:
        scan = next(reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                    if c.topic == LIDAR)
    with AnyReader([out]) as reader:
        cloud = next(reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                     if c.topic == f'/{LABELED_TOPIC}')
    assert next(out.glob('*.db3')).is_file()
    points = np.frombuffer(cloud.data, LABELED_POINT_DTYPE)
    np.testing.assert_array_equal(points['label'], labeler.label(read_scan(scan).points).labels)


def _first_cloud(out: Path) -> np.ndarray:
    with AnyReader([out]) as reader:
        cloud = next(reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                     if c.topic == f'/{LABELED_TOPIC}')
    return np.frombuffer(cloud.data, LABELED_POINT_DTYPE)


@pytest.mark.slow
def test_label_reads_scans_as_the_checkpoint_records(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    recorded = ScanInput(intensity_scale=INTENSITY_SCALE, min_range_m=MIN_RANGE_M,
                         max_range_m=MAX_RANGE_M)
    checkpoint = tmp_path / 'student.pt'
    save_checkpoint(checkpoint, dataclasses.replace(tiny_checkpoint(), scan_input=recorded))
    bag = _write_input_bag(tmp_path / 'input', 'mcap')
    with AnyReader([bag]) as reader:
        scan = next(reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                    if c.topic == LIDAR)
    common = ['--checkpoint', str(checkpoint), '--bag', str(bag), '--lidar-topic', LIDAR]
    assert main([*common, '--out', str(tmp_path / 'default')]) == 0
    assert 'overrides' not in capsys.readouterr().err
    xyzi = read_scan(scan, recorded).points
    expected = Labeler(tiny_checkpoint(), min_range_m=MIN_RANGE_M,
                       max_range_m=MAX_RANGE_M).label(xyzi)
    points = _first_cloud(tmp_path / 'default')
    np.testing.assert_array_equal(points['intensity'], xyzi[:, 3])
    np.testing.assert_array_equal(points['label'], expected.labels)
    # An explicit flag wins, and says so.
    assert main([*common, '--out', str(tmp_path / 'scaled'), '--intensity-scale', '1']) == 0
    assert (f"relkd-label: intensity_scale 1.0 (--intensity-scale) overrides the checkpoint's "
            f'{INTENSITY_SCALE!r}') in capsys.readouterr().err
    np.testing.assert_array_equal(_first_cloud(tmp_path / 'scaled')['intensity'],
                                  read_scan(scan).points[:, 3])


@pytest.mark.slow
def test_label_overwrite_replaces_the_output(checkpoint: Path, tmp_path: Path) -> None:
    bag = _write_input_bag(tmp_path / 'input', 'mcap')
    out = tmp_path / 'labeled'
    argv = ['--checkpoint', str(checkpoint), '--bag', str(bag), '--out', str(out),
            '--lidar-topic', LIDAR]
    assert main([*argv, '--storage', 'sqlite3']) == 0
    assert main([*argv, '--overwrite']) == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, 'labeled.mcap',
                                                     'metadata.yaml']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['input', 'input_drive', 'labeled']


@pytest.mark.parametrize(('case', 'code', 'message'), [
    ('missing bag', 2, r'--bag .*nope: no such bag'),
    ('not a checkpoint', 1, r'student\.pt: not a relkd checkpoint \(a torch.save zip archive'),
    ('unknown lidar topic', 2, r'lidar topic /velodyne is not in the bag; its topics: '
                               r'/LIDAR_TOP \(sensor_msgs/msg/PointCloud2\), /tags '
                               r'\(relkd_test/msg/Tag\), /tf \(tf2_msgs/msg/TFMessage\)'),
    ('not a cloud topic', 2, r'lidar topic /tags carries relkd_test/msg/Tag, not '
                             r'sensor_msgs/msg/PointCloud2; PointCloud2 topics: /LIDAR_TOP'),
    ('existing out', 2, r'--out .*labeled already exists and is a folder that relkd did not '
                        r'write, not a labeled-bag; it is never replaced: choose a new path'),
    ('output is the input', 2, r'--out .*input is the input .*input; choose an output path '
                               r'apart from every input'),
    ('output inside the input', 2, r'--out .*input/input.mcap lies inside the input'),
    ('missing checkpoint', 2, r'--checkpoint .*missing.pt: no such file'),
])
def test_label_bad_input_fails_clearly(case: str, code: int, message: str, checkpoint: Path,
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    bag = _write_input_bag(tmp_path / 'input', 'mcap')
    out = tmp_path / 'labeled'
    argv = {'--checkpoint': str(checkpoint), '--bag': str(bag), '--out': str(out)}
    extra: list[str] = []
    if case == 'missing bag':
        argv['--bag'] = str(tmp_path / 'nope')
    elif case == 'not a checkpoint':
        argv['--checkpoint'] = str(tmp_path / 'student.pt')
        (tmp_path / 'student.pt').write_text('not a checkpoint')
    elif case == 'unknown lidar topic':
        extra = ['--lidar-topic', '/velodyne']
    elif case == 'not a cloud topic':
        extra = ['--lidar-topic', '/tags']
    elif case == 'existing out':
        out.mkdir()
        (out / 'notes.txt').write_text('mine')
        extra = ['--overwrite']
    elif case == 'output is the input':
        argv['--out'] = str(bag)
        extra = ['--overwrite']
    elif case == 'output inside the input':
        argv['--out'] = str(bag / 'input.mcap')  # the bag's own storage file
        extra = ['--overwrite']
    elif case == 'missing checkpoint':
        argv['--checkpoint'] = str(tmp_path / 'missing.pt')
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*(item for pair in argv.items() for item in pair), *extra]) == code
    err = capsys.readouterr().err
    assert err.count('relkd-label: error:') == 1
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert _raw(bag)[LIDAR]


def test_label_topics_match_the_node_defaults() -> None:
    params = SegmentParams()
    assert (params.labeled_topic, params.legend_topic) == (LABELED_TOPIC, LEGEND_TOPIC)


def _lidar_drive(path: Path, frames: int) -> Path:
    record_drive(SyntheticDrive(RIGS['nuscenes'], frames, seed=3, cameras=False), path)
    return path


def test_label_truncated_mcap_is_labelled_up_to_the_damage_with_a_warning(
        checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag = _lidar_drive(tmp_path / 'cut', 8)
    total = sum(len(m) for m in _raw(bag).values())
    mcap = next(bag.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[:mcap.stat().st_size // 2])
    out = tmp_path / 'labeled'
    assert main(['--checkpoint', str(checkpoint), '--bag', str(bag), '--out', str(out),
                 '--preset', 'synth-nuscenes']) == 0
    captured = capsys.readouterr()
    warning = captured.err.splitlines()[-1]
    match = re.fullmatch(
        rf'relkd-label: warning: {bag} is damaged: the MCAP file ends without its footer '
        rf'\(truncated at byte \d+ of \d+\); read (\d+) of {total} messages written before the '
        rf'damage; {out} holds what was read', warning)
    assert match is not None, warning
    copied = int(match[1])
    assert 0 < copied < total
    written = _raw(out)
    assert sum(len(m) for t, m in written.items() if t.startswith('/LIDAR') or t.startswith(
        '/tf')) == copied
    assert 1 <= len(written[f'/{LABELED_TOPIC}']) < 8
    assert 'damaged input: the MCAP file ends without its footer' in captured.out


def test_label_bag_of_only_malformed_scans_fails_and_writes_nothing(
        checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def no_z(topic: str, t_ns: int, msg: Any) -> Any:
        if topic == LIDAR:
            msg.fields = [f for f in msg.fields if f.name != 'z']
        return msg

    bag = rewrite_bag(_lidar_drive(tmp_path / 'drive', 2), tmp_path / 'broken', edit=no_z)
    out = tmp_path / 'labeled'
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(['--checkpoint', str(checkpoint), '--bag', str(bag), '--out', str(out),
                 '--preset', 'synth-nuscenes']) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"relkd-label: error: no scan of {LIDAR} could be labelled (2 read: 2 × DataError: "
        "PointCloud2 lacks field(s) ['z']; it has ['x', 'y', 'intensity', 'ring', 'label', "
        "'instance']); nothing written")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
