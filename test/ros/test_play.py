"""``relkd-play`` as a real process publishing a tiny bag over DDS to this test process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')

from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from ros.nodetools import ROOT, Probe, free_domain_id
from rosbags.typesys import get_types_from_msg
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String

from relkd_core.data.bag import BagWriter, open_bags
from relkd_core.data.scan import stamp_ns
from relkd_ros.play import _qos, main, message_class, played_topics

LIDAR = '/points_raw'
LATCHED = '/relkd_test/latched'
CUSTOM = '/tags'
T0_NS = 1_700_000_000_000_000_000
PERIOD_NS = 400_000_000
NUM_SCANS = 4
HEADER_OFFSET_NS = 1_000_000  # header stamps differ from record times


@pytest.fixture(scope='module')
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 small clouds 0.4 s apart, a latched String and a topic of a type no package has."""
    path = tmp_path_factory.mktemp('play') / 'bag'
    rng = np.random.default_rng(0)
    dtype = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', '<f4')])
    with BagWriter(path) as writer:
        writer.factory.store.register(get_types_from_msg('uint32 count', 'relkd_test/msg/Tag'))
        writer.add_topic(LIDAR, 'sensor_msgs/msg/PointCloud2')
        writer.add_topic(LATCHED, 'std_msgs/msg/String', latched=True)
        writer.add_topic(CUSTOM, 'relkd_test/msg/Tag')
        writer.write(LATCHED, T0_NS, writer.factory.message('std_msgs/msg/String', data='map'))
        for i in range(NUM_SCANS):
            t_ns = T0_NS + i * PERIOD_NS
            points = rng.uniform(-10, 10, size=(100, 4)).astype(np.float32).view(dtype)
            writer.write(LIDAR, t_ns, writer.factory.point_cloud(
                points.reshape(-1), t_ns + HEADER_OFFSET_NS, 'lidar'))
            writer.write(CUSTOM, t_ns, writer.factory.message('relkd_test/msg/Tag', count=i))
    return path


def _play(bag: Path, domain_id: int, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED='1',
               RMW_IMPLEMENTATION='rmw_fastrtps_cpp')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
    return subprocess.Popen([sys.executable, '-m', 'relkd_ros.play', str(bag), *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_play_publishes_every_scan_with_its_stamp_at_the_scaled_rate(bag: Path) -> None:
    domain = free_domain_id()
    probe = Probe(domain, 'relkd_play_probe')
    try:
        probe.subscribe(PointCloud2, LIDAR, probe.qos(depth=100))
        probe.subscribe(String, LATCHED, probe.qos(latched=True))
        player = _play(bag, domain, '--rate', '2', '--wait-subscribers-s', '30',
                       '--delay-s', '0.5')
        try:
            output, _ = player.communicate(timeout=60)
        finally:
            if player.poll() is None:
                player.kill()
        log = output.decode(errors='replace')
        assert player.returncode == 0, log
        assert probe.wait_for(lambda: len(probe.messages(LIDAR)) == NUM_SCANS, 10), log
        received = probe.received[LIDAR]
        stamps = [stamp_ns(msg.header.stamp) for _, msg in received]
        assert stamps == [T0_NS + i * PERIOD_NS + HEADER_OFFSET_NS for i in range(NUM_SCANS)]
        assert [msg.width for _, msg in received] == [100] * NUM_SCANS
        span_s = received[-1][0] - received[0][0]
        expected_s = (NUM_SCANS - 1) * PERIOD_NS / 1e9 / 2  # 0.6 s at rate 2 (1.2 s at 1)
        assert 0.75 * expected_s < span_s < 1.5 * expected_s, span_s
        assert [msg.data for msg in probe.messages(LATCHED)] == ['map']
        assert log.count(f'not playing {CUSTOM}: the Python package of relkd_test/msg/Tag '
                         'is not installed') == 1
    finally:
        probe.close()


def test_play_latches_transient_local_topics(bag: Path) -> None:
    with open_bags([bag]) as reader:
        topics = played_topics(reader, ())
    assert {name: (t.latched, t.count) for name, t in topics.items()} == {
        LIDAR: (False, NUM_SCANS), LATCHED: (True, 1), CUSTOM: (False, NUM_SCANS)}
    latched, sensor = _qos(topics[LATCHED], 5), _qos(topics[LIDAR], 5)
    assert (latched.durability, latched.reliability, latched.depth) == (
        DurabilityPolicy.TRANSIENT_LOCAL, ReliabilityPolicy.RELIABLE, 1)
    assert (sensor.durability, sensor.reliability, sensor.depth) == (
        DurabilityPolicy.VOLATILE, ReliabilityPolicy.RELIABLE, 5)


def test_play_message_class_resolves_installed_types_only() -> None:
    assert message_class('sensor_msgs/msg/PointCloud2') is PointCloud2
    assert message_class('relkd_test/msg/Tag') is None
    assert message_class('std_msgs/msg/NoSuchType') is None
    assert message_class('PointCloud2') is None


@pytest.mark.parametrize(('argv', 'message'), [
    (['{missing}'], 'no such bag'),
    (['{bag}', '--rate', '0'], '--rate must be above 0, got 0.0'),
    (['{bag}', '--depth', '0'], '--depth must be at least 1, got 0'),
])
def test_play_bad_arguments_exit_2(argv: list[str], message: str, bag: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(bag=bag, missing=tmp_path / 'missing') for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_play_unknown_topic_fails(bag: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env_domain = str(free_domain_id())
    previous = os.environ.get('ROS_DOMAIN_ID')
    os.environ['ROS_DOMAIN_ID'] = env_domain
    try:
        assert main([str(bag), '--topics', '/nope']) == 1
    finally:
        if previous is None:
            del os.environ['ROS_DOMAIN_ID']
        else:
            os.environ['ROS_DOMAIN_ID'] = previous
