"""Tests for relkd_core.infer.label_bag without the CLI: a recorded bag labelled scan by scan
through the node's per-scan core (read_scan, label_scan)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from infer.checkpoints import STORED_NAMES, tiny_checkpoint
from rosbags.highlevel import AnyReader

from relkd_core.data.scan import ScanInput, read_scan
from relkd_core.errors import BagError
from relkd_core.infer import LABELED_POINT_DTYPE, Labeler, entry_colors
from relkd_core.infer.label_bag import label_bag
from relkd_core.infer.pipeline import ReadSettings
from relkd_core.infer.runtime import VocabularySlot, label_scan
from relkd_core.infer.topics import LABELED_TOPIC, LEGEND_TOPIC
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.record import record_drive
from relkd_core.sim.rig import RIGS
from relkd_core.taxonomy import load_taxonomy

LIDAR = RIGS['nuscenes'].lidar.topic
SCAN_INPUT = ScanInput(intensity_scale=0.5, min_range_m=2.0, max_range_m=60.0)


@pytest.fixture(scope='module')
def drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bag = tmp_path_factory.mktemp('label_bag') / 'drive'
    record_drive(SyntheticDrive(RIGS['nuscenes'], 2, seed=3, cameras=False), bag,
                 storage='mcap')
    return bag


def _labeler() -> Labeler:
    return Labeler(tiny_checkpoint(), min_range_m=SCAN_INPUT.min_range_m,
                   max_range_m=SCAN_INPUT.max_range_m)


def test_label_bag_labels_each_scan_as_the_node_core_does(drive: Path, tmp_path: Path) -> None:
    labeler = _labeler()
    report = label_bag(drive, tmp_path / 'out', labeler,
                       settings=ReadSettings(SCAN_INPUT, labeler.limits))
    assert (report.scans, report.labeled, report.legends, report.dropped) == (2, 2, 1, {})
    with AnyReader([drive]) as reader:
        scans = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                 if c.topic == LIDAR]
    with AnyReader([tmp_path / 'out']) as reader:
        clouds = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                  if c.topic == f'/{LABELED_TOPIC}']
        legends = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                   if c.topic == f'/{LEGEND_TOPIC}']
    labeler = _labeler()
    slot = VocabularySlot(labeler.embedding)
    for scan, cloud in zip(scans, clouds, strict=True):
        expected = label_scan(labeler, read_scan(scan, SCAN_INPUT).points, slot).points
        points = np.frombuffer(cloud.data, LABELED_POINT_DTYPE)
        for name in LABELED_POINT_DTYPE.names or ():  # per field: NaN scores compare equal
            np.testing.assert_array_equal(points[name], expected[name])
    assert [m.text for m in legends[0].markers[1:]] == [
        f'{i}: {n}' for i, n in enumerate(STORED_NAMES)]
    assert report.points == sum(len(np.frombuffer(c.data, LABELED_POINT_DTYPE))
                                for c in clouds)


def test_label_bag_refuses_an_unknown_lidar_topic(drive: Path, tmp_path: Path) -> None:
    with pytest.raises(BagError, match='/nowhere'):
        label_bag(drive, tmp_path / 'out', _labeler(), lidar_topic='/nowhere')
    assert not (tmp_path / 'out').exists()


def test_label_bag_colours_entries_by_the_checkpoints_taxonomy(drive: Path,
                                                               tmp_path: Path) -> None:
    checkpoint = dataclasses.replace(tiny_checkpoint(), taxonomy='semantickitti19')
    label_bag(drive, tmp_path / 'out', Labeler(checkpoint))
    with AnyReader([tmp_path / 'out']) as reader:
        legend = next(reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                      if c.topic == f'/{LEGEND_TOPIC}')
    vocabulary = Labeler(checkpoint).vocabulary
    expected = entry_colors(vocabulary, load_taxonomy('semantickitti19'))
    assert not np.array_equal(expected, entry_colors(vocabulary))  # the test means something
    np.testing.assert_allclose([(m.color.r, m.color.g, m.color.b) for m in legend.markers[1:]],
                               expected / 255.0)
