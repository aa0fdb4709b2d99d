"""The online labelling runtime without ROS: queue, vocabulary versions, legend latch, stats."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
from infer.checkpoints import synthetic_scan, tiny_checkpoint

from relkd_core.infer import Labeler, entry_colors
from relkd_core.infer.runtime import (
    LegendLatch,
    RuntimeStatistics,
    ScanQueue,
    VocabularySlot,
    label_scan,
)
from relkd_core.taxonomy import load_taxonomy
from relkd_core.teachers.vocabulary import Vocabulary


def test_scan_queue_keeps_the_newest_items_and_counts_the_dropped() -> None:
    queue: ScanQueue[int] = ScanQueue(2)
    assert [queue.put(i) for i in range(5)] == [0, 0, 1, 1, 1]
    assert [queue.get(0.01), queue.get(0.01)] == [3, 4]
    assert queue.get(0.01, keep_waiting=lambda: False) is None


def test_scan_queue_close_wakes_a_waiting_consumer() -> None:
    queue: ScanQueue[int] = ScanQueue(1)
    got: list[int | None] = []
    consumer = threading.Thread(target=lambda: got.append(queue.get(10.0)))
    consumer.start()
    time.sleep(0.05)
    queue.close()
    consumer.join(timeout=2)
    assert not consumer.is_alive() and got == [None] and queue.closed


def test_scan_queue_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match='capacity must be at least 1, got 0'):
        ScanQueue(0)


def test_legend_latch_claims_once_per_version_and_frame() -> None:
    latch = LegendLatch()
    assert [latch.claim(0, 'lidar'), latch.claim(0, 'lidar'), latch.claim(1, 'lidar'),
            latch.claim(1, 'velo'), latch.claim(1, 'velo')] == [True, False, True, True, False]
    latch.reset()
    assert latch.claim(1, 'velo')


class _SlowLabeler(Labeler):
    """A labeler that signals when a scan started and waits before labelling it."""

    started = threading.Event()
    proceed = threading.Event()

    def label(self, points, **options):  # type: ignore[no-untyped-def]
        self.started.set()
        assert self.proceed.wait(10)
        return super().label(points, **options)


def test_label_scan_keeps_the_vocabulary_it_started_with_through_a_swap() -> None:
    """A swap while a scan is labelled: the scan's labels, colours and version are the old
    vocabulary's; the next scan gets the new one, with a new version the legend latch claims."""
    labeler = _SlowLabeler(tiny_checkpoint())
    slot = VocabularySlot(labeler.embed(['car', 'road', 'vegetation']))
    latch = LegendLatch()
    scan = synthetic_scan(3000, seed=5)
    results = []
    worker = threading.Thread(target=lambda: results.append(label_scan(labeler, scan, slot)))
    worker.start()
    assert labeler.started.wait(10)
    new = slot.swap(labeler.embed(['vegetation', 'road']))
    labeler.proceed.set()
    worker.join(timeout=30)
    (first,) = results
    second = label_scan(labeler, scan, slot)
    assert (first.vocabulary.version, second.vocabulary.version) == (0, 1) == (0, new.version)
    assert first.vocabulary.names == ('car', 'road', 'vegetation')
    assert second.vocabulary.names == ('vegetation', 'road')
    assert first.result.labels.max() == 2 and second.result.labels.max() <= 1
    road = first.result.labels == 1
    # The same student: a point nearest 'road' among three stays 'road' (1) among two.
    assert (second.result.labels[road] == 1).all()
    assert (first.points['rgb'][road] == second.points['rgb'][road]).all()
    assert [latch.claim(r.vocabulary.version, 'lidar') for r in (first, first, second)] == [
        True, False, True]


def test_runtime_statistics_report_rates_and_percentiles() -> None:
    stats = RuntimeStatistics(latency_window=3)
    start = stats.report(now=100.0)
    assert start['latency_ms_p95'] == 'nan' and start['received'] == '0'
    stats.count('received', 4)
    for latency in (10.0, 20.0, 30.0, 40.0):
        stats.processed(latency)
    stats.error('PointCloud2: bad', 'dropped_malformed')
    report = stats.report(now=102.0)
    assert report['input_rate_hz'] == '2.00' and report['output_rate_hz'] == '2.00'
    assert report['latency_ms_max'] == '40.0' and report['latency_ms_p50'] == '30.0'
    assert report['dropped_malformed'] == '1' and report['last_error'] == 'PointCloud2: bad'
    assert stats.report(now=103.0)['input_rate_hz'] == '0.00'


def test_vocabulary_slot_versions_grow_with_each_swap() -> None:
    labeler = Labeler(tiny_checkpoint())
    slot = VocabularySlot(labeler.embed(['car']))
    versions = [slot.swap(labeler.embed(names)).version for names in (['road'], ['car', 'road'])]
    assert versions == [1, 2] and slot.current().names == ('car', 'road')
    np.testing.assert_array_equal(slot.current().colors.shape, (2, 3))


def test_vocabulary_slot_colours_by_its_taxonomy() -> None:
    labeler = Labeler(tiny_checkpoint())
    kitti = load_taxonomy('semantickitti19')
    slot = VocabularySlot(labeler.embedding, kitti)
    np.testing.assert_array_equal(slot.current().colors, entry_colors(labeler.vocabulary, kitti))
    swapped = slot.swap(labeler.embed(['road']))
    np.testing.assert_array_equal(swapped.colors, entry_colors(Vocabulary.from_names(['road']),
                                                               kitti))


def test_labeler_takes_the_checkpoints_taxonomy() -> None:
    assert Labeler(tiny_checkpoint()).taxonomy.name == 'nuscenes16'
    kitti = dataclasses.replace(tiny_checkpoint(), taxonomy='semantickitti19')
    assert Labeler(kitti).taxonomy.name == 'semantickitti19'
    missing = dataclasses.replace(tiny_checkpoint(), taxonomy='/nowhere/taxonomy.yaml')
    assert Labeler(missing).taxonomy.name == 'nuscenes16'
