"""relkd_core.eval.evaluate, unit by unit: hashing, the checkpoint's text side, the data's
taxonomy, and zero-shot scores checked against counts made here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from infer.checkpoints import TEACHER_DIM, TEACHER_ID, FakeTextEncoder, tiny_checkpoint

from relkd_core.data.prepared import PreparedDataset
from relkd_core.errors import CheckpointError, DataError
from relkd_core.eval import evaluate as evaluate_module
from relkd_core.eval.evaluate import (
    EvalConfig,
    checkpoint_text,
    dataset_taxonomy,
    evaluate,
    file_sha256,
)
from relkd_core.infer.labeler import Labeler
from relkd_core.models import StudentConfig
from relkd_core.models.distilled import (
    DistilledStudent,
    StudentCheckpoint,
    TeacherRef,
    save_checkpoint,
)
from relkd_core.taxonomy import NUSCENES16
from relkd_core.teachers.vocabulary import Vocabulary

CONFIG = StudentConfig(variant='14', width_multiplier=0.125, out_dim=8, voxel_size_m=0.5,
                       voxelization='cartesian')


def test_file_sha256_hashes_across_read_chunks(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    (tmp_path / 'f').write_bytes(data)
    assert file_sha256(tmp_path / 'f') == hashlib.sha256(data).hexdigest()


def test_checkpoint_text_reuses_the_stored_rows_for_its_own_vocabulary() -> None:
    checkpoint = tiny_checkpoint()
    assert checkpoint.vocabulary is not None and checkpoint.text_embeddings is not None
    for wanted in (None, checkpoint.vocabulary):
        vocabulary, text = checkpoint_text(checkpoint, wanted)
        assert vocabulary == checkpoint.vocabulary
        np.testing.assert_array_equal(text, checkpoint.text_embeddings.numpy())


def test_checkpoint_text_embeds_another_vocabulary_with_the_teacher(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate_module, 'teacher_text_encoder',
                        lambda checkpoint: FakeTextEncoder(TEACHER_ID, TEACHER_DIM))
    wanted = Vocabulary.from_names(['car', 'truck'])
    vocabulary, text = checkpoint_text(tiny_checkpoint(), wanted)
    expected = FakeTextEncoder().text_features(wanted)
    assert vocabulary == wanted
    np.testing.assert_allclose(text, expected / np.linalg.norm(expected, axis=1, keepdims=True),
                               atol=1e-6)


class _NegatedEncoder(FakeTextEncoder):
    """The fake teacher's text side with every row negated: rows it gives differ from the
    checkpoint's stored ones, so a test sees which path embedded an entry."""

    def text_features(self, vocabulary: Vocabulary) -> np.ndarray:
        return -super().text_features(vocabulary)


def test_checkpoint_text_embeds_as_the_labeler_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate_module, 'teacher_text_encoder',
                        lambda checkpoint: _NegatedEncoder())
    checkpoint = tiny_checkpoint()
    assert checkpoint.text_embeddings is not None
    wanted = Vocabulary.from_names(['car', 'pedestrian', 'vegetation'])
    _, text = checkpoint_text(checkpoint, wanted)
    labeler = Labeler(checkpoint, wanted, text_encoder=_NegatedEncoder())
    np.testing.assert_array_equal(text, labeler.embeddings.numpy())
    # car and vegetation are stored rows; pedestrian comes from the (negated) text side.
    stored = checkpoint.text_embeddings.numpy()
    np.testing.assert_array_equal(text[[0, 2]], stored[[0, 2]])
    fresh = FakeTextEncoder().text_features(Vocabulary.from_names(['pedestrian']))[0]
    np.testing.assert_allclose(text[1], -fresh, atol=1e-6)


def test_checkpoint_text_needs_a_vocabulary_when_none_is_stored() -> None:
    checkpoint = tiny_checkpoint()
    bare = StudentCheckpoint(student_config=checkpoint.student_config,
                             teacher=checkpoint.teacher, teacher_dim=checkpoint.teacher_dim,
                             state_dict=checkpoint.state_dict)
    with pytest.raises(CheckpointError, match='the checkpoint stores no vocabulary; pass one'):
        checkpoint_text(bare)


@pytest.mark.parametrize(('manifest', 'expected'), [
    (None, 'nuscenes16'),
    ({'preset': {'name': 'x'}}, 'nuscenes16'),
    ({'preset': {'taxonomy': 'semantickitti19'}}, 'semantickitti19'),
])
def test_dataset_taxonomy_follows_the_manifest(tmp_path: Path, manifest: dict | None,
                                               expected: str) -> None:
    if manifest is not None:
        (tmp_path / 'manifest.json').write_text(json.dumps(manifest))
    assert dataset_taxonomy(tmp_path).name == expected


def test_dataset_taxonomy_names_an_unknown_taxonomy(tmp_path: Path) -> None:
    (tmp_path / 'manifest.json').write_text(json.dumps({'preset': {'taxonomy': 'nowhere9'}}))
    with pytest.raises(DataError, match=rf'^{tmp_path}: .*nowhere9'):
        dataset_taxonomy(tmp_path)


def _constant_student(path: Path, dataset: PreparedDataset, entry: int) -> Vocabulary:
    """A student whose every point feature is within a hair of the text row of ``entry`` of
    the default vocabulary (tiny head weights, that row as the bias): it predicts that entry
    everywhere, yet its features still vary (the structural gap needs variance)."""
    assert dataset.teacher_id is not None
    vocabulary = Vocabulary.default()
    text = torch.nn.functional.normalize(
        torch.randn(len(vocabulary), dataset.feature_dim,
                    generator=torch.Generator().manual_seed(1)), dim=1)
    model = DistilledStudent(CONFIG, dataset.feature_dim)
    with torch.no_grad():
        model.head.weight.copy_(1e-4 * torch.randn(model.head.weight.shape,
                                                   generator=torch.Generator().manual_seed(2)))
        model.head.bias.copy_(text[entry])
    save_checkpoint(path, StudentCheckpoint(
        student_config=CONFIG, teacher_dim=dataset.feature_dim, state_dict=model.state_dict(),
        teacher=TeacherRef(name='synthetic', config=None, id=dataset.teacher_id),
        vocabulary=vocabulary, text_embeddings=text, step=1))
    return vocabulary


def test_evaluate_zero_shot_scores_match_counts_made_here(tiny_prepared: Path,
                                                          tmp_path: Path) -> None:
    dataset = PreparedDataset(tiny_prepared, features=False)
    car = NUSCENES16.names.index('car')
    vocabulary = _constant_student(tmp_path / 'student.pt', dataset, car)
    result = evaluate(tmp_path / 'student.pt', tiny_prepared, EvalConfig(protocol='zero-shot'))
    labels = np.concatenate([dataset[i].labels for i in range(len(dataset))])
    counted = labels[labels > 0]
    per_class = np.bincount(counted, minlength=17)
    # Every counted point is predicted 'car': the confusion's car column holds them all.
    np.testing.assert_array_equal(result.confusion[:, car + 1], per_class)
    assert result.confusion.sum() == len(counted)
    assert result.metrics['num_points'] == len(counted)
    assert result.metrics['vocabulary'] == list(vocabulary.names)
    car_iou = 100.0 * per_class[car + 1] / len(counted)
    assert result.metrics['per_class_iou']['car'] == pytest.approx(car_iou, abs=0.01)
    present = [name for i, name in enumerate(NUSCENES16.names) if per_class[i + 1]]
    others = [result.metrics['per_class_iou'][n] for n in present if n != 'car']
    assert others == [0.0] * len(others)
    assert result.metrics['miou'] == pytest.approx(car_iou / len(present), abs=0.01)
