"""segment_lifecycle_node as a lifecycle manager drives it, over real DDS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip('rclpy')
lifecycle_msgs = pytest.importorskip('lifecycle_msgs')

from infer.checkpoints import synthetic_scan, write_tiny_checkpoint  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from ros.nodetools import Probe, free_domain_id, node_log_tail, running_node, xyzi_cloud  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from relkd_core.infer import LABELED_POINT_DTYPE  # noqa: E402

# Each test starts node processes: run by make test-slow (and CI), not make test.
pytestmark = pytest.mark.slow

NODE = 'relkd_segment'
MODULE = 'relkd_ros.segment_lifecycle_node'


class Manager:
    """The lifecycle-manager side: state queries and transitions through the node's services."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self._get = probe.node.create_client(GetState, f'/{NODE}/get_state')
        self._change = probe.node.create_client(ChangeState, f'/{NODE}/change_state')
        assert self._get.wait_for_service(timeout_sec=60)

    def _call(self, client: Any, request: Any) -> Any:
        future = client.call_async(request)
        assert self.probe.wait_for(future.done, 60)
        return future.result()

    def state(self) -> str:
        return self._call(self._get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        return bool(self._call(self._change, request).success)


def test_lifecycle_node_creates_and_releases_its_interfaces_by_transition(
        tmp_path: Path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / 'student.pt')
    domain, log = free_domain_id(), tmp_path / 'node.log'
    with running_node({'checkpoint': str(checkpoint)}, domain, log, module=MODULE):
        probe = Probe(domain)
        try:
            manager = Manager(probe)
            points = probe.publisher(PointCloud2, 'points')
            probe.subscribe(PointCloud2, 'labeled_points')
            assert manager.state() == 'unconfigured'
            assert manager.transition(Transition.TRANSITION_CONFIGURE)
            assert manager.state() == 'inactive'
            assert not probe.wait_for(lambda: points.get_subscription_count() > 0, 1.0)

            assert manager.transition(Transition.TRANSITION_ACTIVATE)
            assert manager.state() == 'active'
            assert probe.wait_matched(points, 30), node_log_tail(log)
            scan = synthetic_scan(1000, seed=2)
            for attempt in range(40):
                points.publish(xyzi_cloud(scan, 10**9 * (attempt + 1)))
                if probe.wait_for(lambda: bool(probe.messages('labeled_points')), 0.5):
                    break
            labeled = np.frombuffer(probe.messages('labeled_points')[0].data,
                                    LABELED_POINT_DTYPE)
            assert len(labeled) == 1000 and (labeled['label'] < 3).all()

            assert manager.transition(Transition.TRANSITION_DEACTIVATE)
            assert manager.state() == 'inactive'
            assert probe.wait_for(lambda: points.get_subscription_count() == 0, 10)
            count = len(probe.messages('labeled_points'))
            points.publish(xyzi_cloud(scan, 10**12))
            assert not probe.wait_for(lambda: len(probe.messages('labeled_points')) > count, 1)

            assert manager.transition(Transition.TRANSITION_CLEANUP)
            assert manager.state() == 'unconfigured'
            assert manager.transition(Transition.TRANSITION_CONFIGURE)
            assert manager.transition(Transition.TRANSITION_ACTIVATE)
            assert probe.wait_matched(points, 30)
            assert manager.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
            assert manager.state() == 'finalized'
            assert probe.wait_for(lambda: points.get_subscription_count() == 0, 10)
        finally:
            probe.close()
    assert 'Traceback' not in log.read_text()


def test_lifecycle_node_configure_fails_cleanly_without_a_checkpoint(tmp_path: Path) -> None:
    domain, log = free_domain_id(), tmp_path / 'node.log'
    with running_node({'checkpoint': str(tmp_path / 'missing.pt')}, domain, log, module=MODULE):
        probe = Probe(domain)
        try:
            manager = Manager(probe)
            assert not manager.transition(Transition.TRANSITION_CONFIGURE)
            assert manager.state() == 'unconfigured'
        finally:
            probe.close()
    text = log.read_text()
    assert f"cannot configure: checkpoint: no such file '{tmp_path / 'missing.pt'}'" in text
    assert 'Traceback' not in text
