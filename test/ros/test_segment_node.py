"""segment_node as a real process, driven over real DDS from this test process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('visualization_msgs.msg')
diagnostic_msgs = pytest.importorskip('diagnostic_msgs.msg')

from infer.checkpoints import synthetic_scan, tiny_checkpoint, write_tiny_checkpoint  # noqa: E402
from ros.nodetools import (  # noqa: E402
    Probe,
    diagnostics_values,
    field_layout,
    free_domain_id,
    node_log_tail,
    running_node,
    stamped_header,
    xyzi_cloud,
)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from relkd_core.infer import LABELED_POINT_DTYPE, UNLABELED, Labeler  # noqa: E402
from relkd_ros.conversions import image_message, pointfields  # noqa: E402

# Each test starts node processes: run by make test-slow (and CI), not make test.
pytestmark = pytest.mark.slow

NODE = 'relkd_segment'
# lidar x forward, y left, z up → camera optical z forward, x right, y down.
LIDAR_TO_CAMERA = 'lidar cam 0 0 0 -0.5 0.5 -0.5 0.5'
CAMERA_K = [100.0, 0.0, 80.0, 0.0, 100.0, 60.0, 0.0, 0.0, 1.0]


class Graph:
    """The running node, the probe and bookkeeping shared by the tests of this module."""

    def __init__(self, probe: Probe, process: Any, log: Path, checkpoint: Path) -> None:
        self.probe, self.process, self.log, self.checkpoint = probe, process, log, checkpoint
        self.points = probe.publisher(PointCloud2, 'points')
        self.image = probe.publisher(Image, '/cam/image_raw')
        self.info = probe.publisher(CameraInfo, '/cam/camera_info')
        for topic, msg_type in (('labeled_points', PointCloud2), ('/cam/image_raw/overlay', Image),
                                ('/diagnostics', diagnostic_msgs.DiagnosticArray)):
            probe.subscribe(msg_type, topic)
        probe.subscribe(MarkerArray, 'legend', probe.qos(latched=True))
        self._stamp_s = 100

    def next_stamp_ns(self) -> int:
        self._stamp_s += 1
        return self._stamp_s * 1_000_000_000

    def labeled(self, t_ns: int, timeout_s: float = 30.0) -> Any:
        def find() -> Any:
            return next((m for m in self.probe.messages('labeled_points')
                         if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == t_ns), None)

        if not self.probe.wait_for(lambda: find() is not None, timeout_s):
            raise AssertionError(f'no labeled cloud for t={t_ns}\n{node_log_tail(self.log)}')
        return find()

    def send(self, scan: np.ndarray, height: int = 1) -> Any:
        t_ns = self.next_stamp_ns()
        self.points.publish(xyzi_cloud(scan, t_ns, 'lidar', height))
        return self.labeled(t_ns)

    def diagnostics(self, after: float, timeout_s: float = 10.0) -> dict[str, str]:
        def latest() -> Any:
            received = self.probe.received['/diagnostics']
            return next((m for t, m in reversed(received) if t > after), None)

        assert self.probe.wait_for(lambda: latest() is not None, timeout_s)
        return diagnostics_values(latest())

    def alive(self) -> bool:
        return self.process.poll() is None


@pytest.fixture(scope='module')
def graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Graph]:
    root = tmp_path_factory.mktemp('segment_node')
    checkpoint = write_tiny_checkpoint(root / 'student.pt')
    domain = free_domain_id()
    params = {'checkpoint': str(checkpoint), 'image_topics': ['/cam/image_raw'],
              'camera_info_topics': ['/cam/camera_info'], 'static_transforms': [LIDAR_TO_CAMERA],
              'diagnostics_period_s': 0.5, 'input_depth': 1000}
    with running_node(params, domain, root / 'node.log') as process:
        probe = Probe(domain)
        try:
            graph = Graph(probe, process, root / 'node.log', checkpoint)
            if not probe.wait_matched(graph.points, 60):
                raise AssertionError(f'the node never subscribed\n{node_log_tail(graph.log)}')
            warm_up = synthetic_scan(100)
            for _ in range(100):  # until this side's subscriptions are matched too
                t_ns = graph.next_stamp_ns()
                graph.points.publish(xyzi_cloud(warm_up, t_ns))
                if probe.wait_for(lambda: bool(probe.messages('labeled_points')), 0.5):
                    break
            yield graph
        finally:
            probe.close()


@pytest.fixture(scope='module')
def labeler() -> Labeler:
    return Labeler(tiny_checkpoint())


@pytest.mark.parametrize('num_points', [34_000, 120_000])
def test_segment_node_labels_match_the_labeler(graph: Graph, labeler: Labeler,
                                               num_points: int) -> None:
    scan = synthetic_scan(num_points, seed=num_points)
    t_before = graph._stamp_s + 1
    msg = graph.send(scan)
    assert msg.header.frame_id == 'lidar' and msg.header.stamp.sec == t_before
    assert field_layout(msg) == pointfields(LABELED_POINT_DTYPE)
    assert [f.datatype for f in msg.fields][4] == PointField.UINT16
    assert (msg.height, msg.width, msg.point_step) == (1, num_points, 28)
    points = np.frombuffer(msg.data, LABELED_POINT_DTYPE)
    expected = labeler.label(scan)
    np.testing.assert_array_equal(points['x'], scan[:, 0])
    np.testing.assert_array_equal(points['intensity'], scan[:, 3])
    assert (points['label'] == expected.labels).mean() > 0.999
    np.testing.assert_allclose(points['score'], expected.scores, atol=1e-4)


def test_segment_node_drops_nan_points_as_training_did_unless_told_to_keep(graph: Graph
                                                                          ) -> None:
    scan = synthetic_scan(64 * 100, seed=3)
    scan[::7, :3] = np.nan
    finite = np.delete(np.arange(len(scan)), np.s_[::7])
    dropped = graph.send(scan, height=64)  # nan_policy '' : the checkpoint's, drop
    assert (dropped.height, dropped.width) == (1, len(finite))
    points = np.frombuffer(dropped.data, LABELED_POINT_DTYPE)
    np.testing.assert_array_equal(points['x'], scan[finite, 0])
    assert (points['label'] < 3).all()
    assert graph.probe.set_parameters(NODE, {'nan_policy': 'keep'})[0].successful
    try:
        msg = graph.send(scan, height=64)
        assert (msg.height, msg.width) == (64, 100)
        points = np.frombuffer(msg.data, LABELED_POINT_DTYPE)
        assert (points['label'][::7] == UNLABELED).all()
        assert (points['rgb'][::7] == 0x808080).all()
        np.testing.assert_array_equal(np.delete(points['label'], np.s_[::7]),
                                      np.frombuffer(dropped.data, LABELED_POINT_DTYPE)['label'])
    finally:
        graph.probe.set_parameters(NODE, {'nan_policy': ''})


def test_segment_node_publishes_an_overlay_for_a_synced_camera(graph: Graph) -> None:
    t_ns = graph.next_stamp_ns()
    info = CameraInfo(width=160, height=120, distortion_model='plumb_bob', k=CAMERA_K)
    info.header = stamped_header(t_ns, 'cam')
    rgb = np.zeros((120, 160, 3), np.uint8)
    graph.info.publish(info)
    graph.image.publish(image_message(stamped_header(t_ns + 10_000_000, 'cam'), rgb))
    time.sleep(0.3)
    scan = synthetic_scan(5000, seed=4)
    graph.points.publish(xyzi_cloud(scan, t_ns, 'lidar'))
    labeled = graph.labeled(t_ns)
    assert graph.probe.wait_for(lambda: len(graph.probe.messages('/cam/image_raw/overlay')) > 0)
    overlay = graph.probe.messages('/cam/image_raw/overlay')[-1]
    assert overlay.header.stamp.sec * 10**9 + overlay.header.stamp.nanosec == t_ns + 10_000_000
    pixels = np.frombuffer(overlay.data, np.uint8).reshape(120, 160, 3)
    painted = pixels.reshape(-1, 3)[pixels.reshape(-1, 3).any(axis=1)]
    packed = (painted[:, 0].astype(np.uint32) << 16) | (painted[:, 1].astype(np.uint32) << 8) | \
        painted[:, 2]
    cloud_colours = set(np.frombuffer(labeled.data, LABELED_POINT_DTYPE)['rgb'].tolist())
    assert len(painted) > 500 and set(packed.tolist()) <= cloud_colours


def test_segment_node_vocabulary_parameter_changes_labels(graph: Graph) -> None:
    scan = synthetic_scan(3000, seed=5)
    before = np.frombuffer(graph.send(scan).data, LABELED_POINT_DTYPE)['label']
    results = graph.probe.set_parameters(NODE, {'vocabulary': ['vegetation', 'road', 'car']})
    assert results[0].successful, results[0].reason
    try:
        after = np.frombuffer(graph.send(scan).data, LABELED_POINT_DTYPE)['label']
        np.testing.assert_array_equal(after, np.array([2, 1, 0], np.uint16)[before])
        assert graph.probe.wait_for(lambda: [m.text for m in graph.probe.messages('legend')[-1]
                                             .markers[1:]] == ['0: vegetation', '1: road',
                                                               '2: car'])
    finally:
        graph.probe.set_parameters(NODE, {'vocabulary': ['car', 'road', 'vegetation']})


def test_segment_node_rejects_text_it_cannot_embed(graph: Graph) -> None:
    results = graph.probe.set_parameters(NODE, {'vocabulary': ['car', 'bench']})
    assert not results[0].successful
    assert "['bench'] are not stored in the checkpoint" in results[0].reason


def _malformed(rng: np.random.Generator, t_ns: int) -> PointCloud2:
    """A cloud broken in one of several ways, chosen by ``rng``."""
    good = xyzi_cloud(rng.normal(size=(rng.integers(1, 50), 4)).astype(np.float32), t_ns)
    kind = rng.integers(0, 7)
    if kind == 0:
        good.point_step = int(rng.integers(0, 12))
    elif kind == 1:
        good.data = bytes(good.data)[: int(rng.integers(0, len(good.data)))]
    elif kind == 2:
        removed = ('x', 'y', 'z')[int(rng.integers(0, 3))]
        good.fields = [f for f in good.fields if f.name != removed]
    elif kind == 3:
        nan = np.full((int(rng.integers(1, 20)), 4), np.nan, np.float32)
        good = xyzi_cloud(nan, t_ns)
    elif kind == 4:
        good.width, good.data = 0, b''
    elif kind == 5:
        good.fields[int(rng.integers(0, 3))].datatype = int(rng.choice([0, 9, 200]))
    else:
        good.height, good.row_step = 3, 1
    return good


def test_segment_node_survives_and_counts_malformed_clouds(graph: Graph) -> None:
    start = time.perf_counter()
    dropped_before = int(graph.diagnostics(start)['dropped_malformed'])
    rng = np.random.default_rng(0)
    # A deep writer history: reliable delivery of every one of the 1000 messages.
    publisher = graph.probe.publisher(PointCloud2, 'points', graph.probe.qos(depth=1000))
    assert graph.probe.wait_matched(publisher)
    for i in range(1000):
        publisher.publish(_malformed(rng, graph.next_stamp_ns()))
        if i % 50 == 49:
            time.sleep(0.05)
    counts: list[int] = []

    def counted() -> bool:
        counts.append(int(graph.diagnostics(time.perf_counter())['dropped_malformed']))
        return counts[-1] >= dropped_before + 1000

    graph.probe.wait_for(counted, 30)
    assert counts[-1] == dropped_before + 1000
    assert graph.alive()
    graph.send(synthetic_scan(2000, seed=6))


def _rss_mb(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return float('nan')


def test_segment_node_bounds_latency_and_memory_at_twice_its_rate(graph: Graph) -> None:
    scan = synthetic_scan(34_000, seed=7)
    start = time.perf_counter()
    graph.send(scan)
    single_s = time.perf_counter() - start
    stale_before = int(graph.diagnostics(time.perf_counter())['dropped_stale'])
    rss_before = _rss_mb(graph.process.pid)
    sent: dict[int, float] = {}
    for _ in range(30):
        t_ns = graph.next_stamp_ns()
        sent[t_ns] = time.perf_counter()
        graph.points.publish(xyzi_cloud(scan, t_ns))
        time.sleep(single_s / 2)
    last = max(sent)
    graph.labeled(last)
    latencies = [t - sent[m.header.stamp.sec * 10**9] for t, m in
                 graph.probe.received['labeled_points'] if m.header.stamp.sec * 10**9 in sent]
    report = graph.diagnostics(time.perf_counter())
    assert int(report['dropped_stale']) > stale_before
    assert len(latencies) < 30
    assert max(latencies) < 4 * single_s + 0.5
    assert _rss_mb(graph.process.pid) - rss_before < 300
    assert graph.alive()


def test_segment_node_legend_follows_a_vocabulary_changed_mid_scan(graph: Graph) -> None:
    """Set the vocabulary while large scans are being labelled: every cloud's labels index the
    legend of its own vocabulary, and once a scan of the new one is out, the latched legend
    names the new entries (it stayed on the old ones when the change came mid-scan)."""
    big = synthetic_scan(120_000, seed=8)
    stamps = [graph.next_stamp_ns() for _ in range(3)]
    graph.points.publish(xyzi_cloud(big, stamps[0]))
    time.sleep(0.02)
    results = graph.probe.set_parameters(NODE, {'vocabulary': ['road', 'vegetation']})
    try:
        assert results[0].successful, results[0].reason
        for t_ns in stamps[1:]:
            graph.points.publish(xyzi_cloud(big, t_ns))
            graph.labeled(t_ns)
        last = np.frombuffer(graph.labeled(stamps[-1]).data, LABELED_POINT_DTYPE)['label']
        assert set(np.unique(last).tolist()) <= {0, 1, UNLABELED}
        assert graph.probe.wait_for(lambda: [m.text for m in graph.probe.messages('legend')[-1]
                                             .markers[1:]] == ['0: road', '1: vegetation'], 5)
    finally:
        graph.probe.set_parameters(NODE, {'vocabulary': ['car', 'road', 'vegetation']})
        graph.send(synthetic_scan(100, seed=9))


def test_segment_node_vocabulary_set_to_an_empty_list_returns_to_the_checkpoints(
        graph: Graph) -> None:
    """`ros2 param set … vocabulary "[]"` sends an empty array: back to the default."""
    assert graph.probe.set_parameters(NODE, {'vocabulary': ['road']})[0].successful
    assert graph.probe.set_parameters(NODE, {'vocabulary': []})[0].successful
    graph.send(synthetic_scan(100, seed=10))
    assert graph.probe.wait_for(lambda: [m.text for m in graph.probe.messages('legend')[-1]
                                         .markers[1:]] == ['0: car', '1: road', '2: vegetation'])
