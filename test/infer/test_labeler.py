"""The open-vocabulary labeler: labels, scores, vocabulary changes, limits and bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from infer.checkpoints import (
    STORED_NAMES,
    TEACHER_ID,
    FakeTextEncoder,
    synthetic_scan,
    tiny_checkpoint,
    write_tiny_checkpoint,
)

from relkd_core.errors import CheckpointError, ConfigError, DataError
from relkd_core.infer import UNLABELED, Labeler, teacher_text_encoder
from relkd_core.models.distilled import TeacherRef
from relkd_core.teachers.vocabulary import Vocabulary


def _no_encoder() -> FakeTextEncoder:
    raise AssertionError('the labeler built a text encoder it did not need')


@pytest.fixture(scope='module')
def scan() -> np.ndarray:
    return synthetic_scan(2000, seed=0)


def test_labeler_labels_are_argmax_of_feature_similarity(scan: np.ndarray) -> None:
    labeler = Labeler(tiny_checkpoint(), text_encoder=_no_encoder)
    result = labeler.label(scan, with_features=True)
    assert result.features is not None
    similarity = result.features @ labeler.embeddings.numpy().T
    np.testing.assert_array_equal(result.labels, similarity.argmax(axis=1).astype(np.uint16))
    np.testing.assert_allclose(result.scores, similarity.max(axis=1), atol=1e-5)
    assert result.labels.dtype == np.uint16 and result.scores.dtype == np.float32
    assert len(np.unique(result.labels)) > 1


def test_labeler_reads_a_float32_scan_in_place_and_leaves_it_unchanged(scan: np.ndarray
                                                                       ) -> None:
    # A contiguous float32 (N, 4) scan with every point valid is labelled without a copy; the
    # labels are those of the same points given as float64 (which are copied first).
    labeler = Labeler(tiny_checkpoint(), text_encoder=_no_encoder, min_range_m=0.0,
                      max_range_m=1e4)
    points = np.ascontiguousarray(scan, dtype=np.float32)
    before = points.copy()
    result = labeler.label(points)
    assert np.array_equal(points, before)
    assert np.all(result.labels != UNLABELED)
    again = labeler.label(points.astype(np.float64))
    np.testing.assert_array_equal(result.labels, again.labels)
    np.testing.assert_array_equal(result.scores, again.scores)


def test_labeler_warm_up_ignores_its_limits_and_changes_no_result(scan: np.ndarray) -> None:
    # A 2000-point warm-up scan would be refused under max_points=1000: the warm-up labels
    # with no limits and leaves the labeler's own as they were.
    labeler = Labeler(tiny_checkpoint(), text_encoder=_no_encoder, max_points=5000,
                      score_threshold=0.2)
    limits = labeler.limits
    fresh = labeler.label(scan)
    labeler.configure(score_threshold=0.2, min_range_m=0.0, max_range_m=float('inf'),
                      max_points=1000)
    assert labeler.warm_up() > 0.0
    labeler.configure(score_threshold=0.2, min_range_m=0.0, max_range_m=float('inf'),
                      max_points=5000)
    assert labeler.limits == limits
    again = labeler.label(scan)
    np.testing.assert_array_equal(again.labels, fresh.labels)
    np.testing.assert_array_equal(again.scores, fresh.scores)


def test_labeler_loads_a_checkpoint_path(tmp_path: Path, scan: np.ndarray) -> None:
    path = write_tiny_checkpoint(tmp_path / 'student.pt')
    from_path = Labeler(path).label(scan)
    from_object = Labeler(tiny_checkpoint()).label(scan)
    np.testing.assert_array_equal(from_path.labels, from_object.labels)


def test_labeler_default_vocabulary_is_the_stored_one() -> None:
    checkpoint = tiny_checkpoint()
    labeler = Labeler(checkpoint, text_encoder=_no_encoder)
    assert labeler.vocabulary.names == STORED_NAMES
    assert checkpoint.text_embeddings is not None
    assert torch.equal(labeler.embeddings, checkpoint.text_embeddings)


def test_labeler_stored_subset_needs_no_encoder() -> None:
    checkpoint = tiny_checkpoint()
    labeler = Labeler(checkpoint, ['vegetation', 'car'], text_encoder=_no_encoder)
    assert checkpoint.text_embeddings is not None
    assert torch.equal(labeler.embeddings, checkpoint.text_embeddings[[2, 0]])


def test_labeler_builds_the_encoder_once_on_first_new_text() -> None:
    encoders: list[FakeTextEncoder] = []

    def factory() -> FakeTextEncoder:
        encoders.append(FakeTextEncoder())
        return encoders[-1]

    checkpoint = tiny_checkpoint()
    labeler = Labeler(checkpoint, text_encoder=factory)
    assert encoders == []
    labeler.set_vocabulary(['car', 'a person walking'])
    labeler.set_vocabulary(['tree', 'road'])
    assert len(encoders) == 1 and encoders[0].calls == 2
    assert checkpoint.text_embeddings is not None
    assert torch.equal(labeler.embeddings[1], checkpoint.text_embeddings[1])
    expected = FakeTextEncoder().text_features(Vocabulary.from_names(['tree']))[0]
    np.testing.assert_allclose(labeler.embeddings[0].numpy(), expected, atol=1e-6)


def test_labeler_vocabulary_change_changes_labels(scan: np.ndarray) -> None:
    labeler = Labeler(tiny_checkpoint(), text_encoder=FakeTextEncoder())
    before = labeler.label(scan).labels
    labeler.set_vocabulary(['vegetation', 'road', 'car'])
    permuted = labeler.label(scan).labels
    np.testing.assert_array_equal(permuted, np.array([2, 1, 0], np.uint16)[before])
    labeler.set_vocabulary(['lamp post'])
    assert (labeler.label(scan).labels == 0).all()


def test_labeler_embed_does_not_switch_vocabulary() -> None:
    labeler = Labeler(tiny_checkpoint(), text_encoder=FakeTextEncoder())
    table = labeler.embed(['tree'])
    assert labeler.vocabulary.names == STORED_NAMES
    labeler.set_vocabulary(table)
    assert labeler.vocabulary.names == ('tree',)


def test_labeler_new_text_without_teacher_raises_checkpoint_error() -> None:
    labeler = Labeler(tiny_checkpoint())
    with pytest.raises(CheckpointError, match=r"\['bench'\] are not stored .*cannot build the "
                                                r"checkpoint's teacher 'fake'"):
        labeler.set_vocabulary(['car', 'bench'])
    assert labeler.vocabulary.names == STORED_NAMES


def test_labeler_rejects_an_encoder_of_another_teacher() -> None:
    labeler = Labeler(tiny_checkpoint(), text_encoder=FakeTextEncoder('openclip-ffffffffffff'))
    with pytest.raises(CheckpointError, match='openclip-ffffffffffff is not the teacher'):
        labeler.set_vocabulary(['bench'])


def test_labeler_rejects_embeddings_of_the_wrong_width() -> None:
    labeler = Labeler(tiny_checkpoint(), text_encoder=FakeTextEncoder(dim=8))
    with pytest.raises(CheckpointError, match=r'shape \(1, 8\), expected \(1, 16\)'):
        labeler.set_vocabulary(['bench'])


@pytest.mark.parametrize(('teacher_id', 'match'), [
    (TEACHER_ID, None),
    ('synthetic-000000000000', 'has id synthetic-000000000000, but the student was distilled'),
])
def test_teacher_text_encoder_checks_the_teacher_id(monkeypatch: pytest.MonkeyPatch,
                                                    teacher_id: str, match: str | None) -> None:
    import relkd_core.teachers

    built: list[tuple[Any, ...]] = []

    def build(name: str, config: Any = None, overrides: Any = ()) -> FakeTextEncoder:
        built.append((name, config))
        return FakeTextEncoder(teacher_id)

    monkeypatch.setattr(relkd_core.teachers, 'build_teacher', build)
    checkpoint = tiny_checkpoint(teacher=TeacherRef(name='synthetic', config=None,
                                                    id=TEACHER_ID))
    if match is None:
        assert teacher_text_encoder(checkpoint).teacher_id == TEACHER_ID
    else:
        with pytest.raises(CheckpointError, match=match):
            teacher_text_encoder(checkpoint)
    assert built == [('synthetic', None)]


def test_teacher_text_encoder_reports_a_missing_teacher_config(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(teacher=TeacherRef(name='synthetic', id=TEACHER_ID,
                                                    config=str(tmp_path / 'x.yaml')))
    with pytest.raises(CheckpointError, match=r'x.yaml is not on this machine'):
        teacher_text_encoder(checkpoint)


def test_labeler_marks_non_finite_and_out_of_range_points_unlabeled(scan: np.ndarray) -> None:
    labeler = Labeler(tiny_checkpoint(), min_range_m=1.0, max_range_m=15.0)
    points = scan.copy()
    points[:5, 0] = np.nan
    points[5:10, 3] = np.inf
    points[10] = [0.2, 0.1, 0.0, 0.5]
    points[11] = [40.0, 0.0, 0.0, 0.5]
    result = labeler.label(points, with_features=True)
    skipped = np.zeros(len(points), bool)
    skipped[:12] = True
    distance = np.linalg.norm(points[:, :3], axis=1)
    skipped |= (distance > 15.0) | (distance < 1.0)
    assert (result.labels[skipped] == UNLABELED).all()
    assert np.isnan(result.scores[skipped]).all()
    assert result.features is not None and np.isnan(result.features[skipped]).all()
    assert (result.labels[~skipped] < 3).all() and np.isfinite(result.scores[~skipped]).all()


def test_labeler_score_threshold_unlabels_weak_points(scan: np.ndarray) -> None:
    labeler = Labeler(tiny_checkpoint())
    full = labeler.label(scan)
    threshold = float(np.median(full.scores))
    labeler.configure(score_threshold=threshold, min_range_m=0.0, max_range_m=np.inf,
                      max_points=None)
    thresholded = labeler.label(scan)
    weak = full.scores < threshold
    assert weak.any() and (thresholded.labels[weak] == UNLABELED).all()
    np.testing.assert_array_equal(thresholded.labels[~weak], full.labels[~weak])


def test_labeler_xyz_only_means_zero_intensity(scan: np.ndarray) -> None:
    labeler = Labeler(tiny_checkpoint())
    zeroed = scan.copy()
    zeroed[:, 3] = 0.0
    np.testing.assert_array_equal(labeler.label(scan[:, :3].astype(np.float64)).labels,
                                  labeler.label(zeroed).labels)


def test_labeler_empty_and_all_invalid_scans_give_empty_labels() -> None:
    labeler = Labeler(tiny_checkpoint())
    empty = labeler.label(np.zeros((0, 4), np.float32))
    assert empty.labels.shape == (0,) and empty.scores.shape == (0,)
    invalid = labeler.label(np.full((7, 4), np.nan, np.float32))
    assert (invalid.labels == UNLABELED).all()


@pytest.mark.parametrize(('points', 'match'), [
    (np.zeros((5, 5), np.float32), r'got shape \(5, 5\)'),
    (np.zeros(12, np.float32), r'got shape \(12,\)'),
    (np.array([['a', 'b', 'c']]), 'must be real numbers'),
])
def test_labeler_rejects_bad_points(points: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        Labeler(tiny_checkpoint()).label(points)


def test_labeler_rejects_more_than_max_points(scan: np.ndarray) -> None:
    labeler = Labeler(tiny_checkpoint(), max_points=100)
    with pytest.raises(DataError, match='2000 valid points, more than max_points 100'):
        labeler.label(scan)


@pytest.mark.parametrize(('kwargs', 'match'), [
    ({'score_threshold': 1.5}, r'score_threshold: expected a cosine similarity in \[-1, 1\]'),
    ({'min_range_m': 5.0, 'max_range_m': 2.0}, 'expected 0 <= min < max'),
    ({'max_points': 0}, 'max_points: expected at least 1'),
    ({'device': 'gpu7'}, "device: 'gpu7' is not a torch device"),
    ({'vocabulary': 'car'}, "vocabulary: .*got the string 'car'"),
])
def test_labeler_rejects_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Labeler(tiny_checkpoint(), **kwargs)
