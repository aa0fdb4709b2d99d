"""The node's labelling loop without ROS: start from a checkpoint file, receive and queue
clouds, label the newest, swap settings and vocabulary from another thread, diagnostics."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from infer.checkpoints import STORED_NAMES, synthetic_scan, write_tiny_checkpoint

from relkd_core.data.bag import MessageFactory, typestore
from relkd_core.errors import ConfigError, DataError
from relkd_core.infer import UNLABELED
from relkd_core.infer.online import LabelingRequest, OnlineLabeling, ScanJob, serve

FACTORY = MessageFactory(typestore())


def _cloud(scan: np.ndarray, t_ns: int = 0) -> object:
    points = np.zeros(len(scan), np.dtype([(n, '<f4') for n in ('x', 'y', 'z', 'intensity')]))
    for column, name in enumerate(('x', 'y', 'z', 'intensity')):
        points[name] = scan[:, column]
    return FACTORY.point_cloud(points, t_ns, 'lidar', is_dense=False)


@pytest.fixture
def online(tmp_path: Path) -> OnlineLabeling:
    path = write_tiny_checkpoint(tmp_path / 'student.pt')
    return OnlineLabeling.start(str(path), LabelingRequest(), queue_size=2)


def test_online_start_uses_the_checkpoint_vocabulary_and_notes_overrides(tmp_path: Path
                                                                         ) -> None:
    path = write_tiny_checkpoint(tmp_path / 'student.pt')
    online = OnlineLabeling.start(str(path), LabelingRequest(
        vocabulary=('road', 'car'), overrides={'max_range_m': (25.0, 'parameter max_range_m')}))
    assert online.core.vocabulary.current().names == ('road', 'car')
    assert online.core.settings.limits.max_range_m == 25.0
    # tiny checkpoints record no ScanInput: the note says what is read instead.
    assert online.notes == ("the checkpoint does not record how its training scans were read; "
                            "reading with intensity 'intensity' × 1, range 0–25 m, non-finite "
                            "points dropped",)


def test_online_receive_queues_the_newest_and_counts_drops(online: OnlineLabeling) -> None:
    for t_ns in range(3):
        online.receive(_cloud(synthetic_scan(50, seed=t_ns), t_ns))
    broken = _cloud(synthetic_scan(50))
    broken.point_step = 0
    with pytest.raises(DataError, match='point_step is 0'):
        online.receive(broken)
    online.dropped('PointCloud2', DataError('point_step is 0'))
    jobs = [online.queue.get(0.01), online.queue.get(0.01)]
    assert [job.header.stamp.nanosec for job in jobs if job is not None] == [1, 2]
    report = online.diagnostics()
    assert (report['received'], report['dropped_stale'], report['dropped_malformed']) == (
        '4', '1', '1')
    assert report['last_error'] == 'PointCloud2: point_step is 0'
    assert report['vocabulary'] == ', '.join(STORED_NAMES) and report['queue_length'] == '0'


def test_online_label_claims_the_legend_once_per_version(online: OnlineLabeling) -> None:
    online.receive(_cloud(synthetic_scan(200)))
    job = online.queue.get(0.01)
    assert isinstance(job, ScanJob)
    labeled, due = online.label(job)
    assert due and labeled.vocabulary.version == 0
    assert not online.label(job)[1]
    online.done(job)
    assert online.diagnostics()['processed'] == '1'
    np.testing.assert_array_equal(labeled.points['x'], job.scan.points[:, 0])


def test_online_prepare_validates_first_and_applies_on_call(online: OnlineLabeling) -> None:
    with pytest.raises(ConfigError, match='score_threshold'):
        online.prepare(LabelingRequest(score_threshold=3.0))
    before = online.core.settings
    apply = online.prepare(LabelingRequest(vocabulary=('car',), score_threshold=0.99,
                                           overrides={'nan_policy': ('keep', 'parameter')}))
    assert online.core.settings is before  # nothing changes until applied
    lines = apply()
    assert lines == ["the checkpoint does not record how its training scans were read; "
                     "reading with intensity 'intensity' × 1, range 0–inf m, non-finite points "
                     "kept", "vocabulary 1 is now ['car']"]
    assert online.core.settings.limits.score_threshold == 0.99
    assert online.core.labeler.limits.score_threshold == -1.0  # the labeler is never written
    online.receive(_cloud(synthetic_scan(200)))
    job = online.queue.get(0.01)
    assert job is not None
    labeled, due = online.label(job)
    assert due and labeled.vocabulary.names == ('car',)
    assert (labeled.result.labels == UNLABELED).mean() > 0.5  # most score below 0.99
    assert online.prepare(LabelingRequest(vocabulary=('car',), score_threshold=0.99, overrides={
        'nan_policy': ('keep', 'parameter')}))() == []  # nothing new to log


def test_serve_processes_until_told_to_stop(online: OnlineLabeling) -> None:
    processed: list[int] = []
    stop = threading.Event()

    class Worker:
        queue = online.queue

        def process(self, job: ScanJob) -> None:
            processed.append(job.header.stamp.nanosec)
            if len(processed) == 2:
                stop.set()

    worker = Worker()
    for t_ns in (7, 8):
        online.receive(_cloud(synthetic_scan(20), t_ns))
    serve(lambda: worker, lambda: not stop.is_set())
    assert processed == [7, 8]
