"""The per-scan labelling core without ROS: one vocabulary rule, read settings validated without
touching the labeler, messages read and labelled with the settings current at the time."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from infer.checkpoints import STORED_NAMES, synthetic_scan, tiny_checkpoint

from relkd_core.data.bag import MessageFactory, typestore
from relkd_core.data.scan import ScanInput, read_scan
from relkd_core.errors import ConfigError, DataError
from relkd_core.infer import UNLABELED, Labeler
from relkd_core.infer.labeler import LabelLimits, resolve_vocabulary
from relkd_core.infer.pipeline import LabelingCore, ReadSettings, read_cloud, read_settings
from relkd_core.teachers.vocabulary import Vocabulary

FACTORY = MessageFactory(typestore())


def _cloud(scan: np.ndarray) -> object:
    """A rosbags PointCloud2 of (N, 4) xyzi float32 rows."""
    points = np.zeros(len(scan), np.dtype([(n, '<f4') for n in ('x', 'y', 'z', 'intensity')]))
    for column, name in enumerate(('x', 'y', 'z', 'intensity')):
        points[name] = scan[:, column]
    return FACTORY.point_cloud(points, 5, 'lidar', is_dense=False)


def test_resolve_vocabulary_prefers_names_then_file_then_the_checkpoint(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint()
    file = tmp_path / 'v.yaml'
    file.write_text('classes:\n  - name: bench\n  - name: car\n')
    assert resolve_vocabulary(['vehicle'], None, checkpoint).names == ('vehicle',)
    assert resolve_vocabulary((), file, checkpoint).names == ('bench', 'car')
    assert resolve_vocabulary((), None, checkpoint).names == STORED_NAMES
    assert resolve_vocabulary() == Vocabulary.default()


@pytest.mark.parametrize(('names', 'file', 'match'), [
    (['car'], 'v.yaml', 'vocabulary: give class names or a vocabulary file, not both'),
    (['car', 'car'], None, r"vocabulary: .*class names must be unique, repeated: \['car'\]"),
])
def test_resolve_vocabulary_refuses_bad_requests(names: list[str], file: str | None,
                                                 match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_vocabulary(names, file)


def test_read_settings_keeps_the_checkpoint_reading_and_notes_each_override() -> None:
    recorded = ScanInput(intensity_field='i', min_range_m=1.0, max_range_m=50.0)
    kept = read_settings(recorded, {'max_range_m': (None, 'parameter max_range_m')})
    assert kept == ReadSettings(recorded, LabelLimits(min_range_m=1.0, max_range_m=50.0), ())
    changed = read_settings(recorded, {'max_range_m': (30.0, 'parameter max_range_m'),
                                       'nan_policy': ('keep', 'parameter nan_policy')},
                            score_threshold=0.25, max_points=9)
    assert changed.scan_input == ScanInput(intensity_field='i', min_range_m=1.0,
                                           max_range_m=30.0, nan_policy='keep')
    assert changed.limits == LabelLimits(score_threshold=0.25, min_range_m=1.0,
                                         max_range_m=30.0, max_points=9)
    assert changed.notes == ("max_range_m 30.0 (parameter max_range_m) overrides the "
                             "checkpoint's 50.0", "nan_policy 'keep' (parameter nan_policy) "
                             "overrides the checkpoint's 'drop'")


@pytest.mark.parametrize(('overrides', 'options', 'match'), [
    ({'min_range_m': (80.0, 'p')}, {}, r'min_range_m, max_range_m: expected 0 <= min < max, '
                                       r'got 80.0 and 50.0'),
    ({}, {'score_threshold': 2.0}, r'score_threshold: expected a cosine similarity in \[-1, 1\]'),
    ({}, {'max_points': 0}, r'max_points: expected at least 1 \(or None\), got 0'),
    ({'nan_policy': ('zero', 'p')}, {}, r"nan_policy: expected one of \['drop', 'keep'\], got "
                                        r"'zero'"),
])
def test_read_settings_validates_without_a_labeler(overrides: dict, options: dict,
                                                   match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        read_settings(ScanInput(max_range_m=50.0), overrides, **options)


def test_labeler_check_limits_writes_nothing() -> None:
    labeler = Labeler(tiny_checkpoint(), max_range_m=40.0)
    limits = Labeler.check_limits(score_threshold=0.5, min_range_m=2.0, max_range_m=9.0)
    assert limits == LabelLimits(score_threshold=0.5, min_range_m=2.0, max_range_m=9.0)
    assert labeler.limits == LabelLimits(max_range_m=40.0)
    with pytest.raises(ConfigError, match='max_points'):
        labeler.check_limits(max_points=-3)
    assert labeler.limits == LabelLimits(max_range_m=40.0)


def test_read_cloud_turns_every_reading_failure_into_data_error() -> None:
    msg = _cloud(synthetic_scan(20))
    msg.data = None  # a broken message object: memoryview raises TypeError
    with pytest.raises(DataError, match=r'unreadable PointCloud2 \(TypeError: '):
        read_cloud(msg, ScanInput())
    msg = _cloud(synthetic_scan(20))
    msg.width = 40
    with pytest.raises(DataError, match='PointCloud2 data is truncated: 320 bytes for 1x40'):
        read_cloud(msg, ScanInput())


def test_labeling_core_reads_and_labels_with_the_current_settings() -> None:
    labeler = Labeler(tiny_checkpoint())
    scan = synthetic_scan(400, seed=2)
    scan[:10, 0] = np.nan
    near = ReadSettings(ScanInput(max_range_m=8.0), LabelLimits(max_range_m=8.0))
    core = LabelingCore(labeler, near)
    msg = _cloud(scan)
    read = core.read(msg)
    assert len(read.points) == 390 and read.nonfinite == 10  # dropped, as training reads
    labeled = core.label(read)
    distance = np.linalg.norm(read.points[:, :3], axis=1)
    assert ((labeled.result.labels == UNLABELED) == (distance > 8.0)).all()
    expected = labeler.label(read.points, limits=near.limits)
    np.testing.assert_array_equal(labeled.result.labels, expected.labels)

    core.swap(ReadSettings(ScanInput(nan_policy='keep'), LabelLimits(max_points=10)))
    kept = core.read(msg)
    assert len(kept.points) == 400 and not kept.valid[:10].any()
    with pytest.raises(DataError, match='scan has 390 valid points, more than max_points 10'):
        core.label(kept)
    assert labeler.limits == LabelLimits()  # the labeler itself never changed
    np.testing.assert_array_equal(kept.points[10:], read_scan(msg).points)
    assert math.isinf(core.settings.limits.max_range_m)
