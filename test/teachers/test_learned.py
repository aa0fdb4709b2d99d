"""The learned teacher: deterministic training, RGB-only features, unit rows of the text space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from relkd_core.errors import TeacherError
from relkd_core.teachers import TeacherImage, Vocabulary, build_teacher
from relkd_core.teachers.learned import (
    LearnedTeacher,
    LearnedTeacherConfig,
    PatchEncoder,
    PatchEncoderConfig,
    load_weights,
    save_weights,
)
from relkd_core.teachers.learned_train import (
    HELD_OUT_SEED,
    TRAIN_SEEDS,
    LearnedTrainConfig,
    cell_targets,
    train_learned_teacher,
)
from relkd_core.teachers.minilm import MINILM_DIM, SentenceEncoder

#: One frame of one drive, 4-channel stages, 3 steps: about a second.
TINY = LearnedTrainConfig(drive_seeds=(TRAIN_SEEDS[0],), frames_per_drive=1, steps=3,
                          batch_size=2, widths=(4, 4, 4))


@pytest.fixture(scope='module')
def tiny_weights(encoder: SentenceEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, record = train_learned_teacher(TINY, encoder)
    path = tmp_path_factory.mktemp('learned') / 'tiny.pt'
    save_weights(path, model, record)
    return path


def test_learned_training_is_deterministic(encoder: SentenceEncoder, tiny_weights: Path,
                                           tmp_path: Path) -> None:
    model, record = train_learned_teacher(TINY, encoder)
    again = tmp_path / 'again.pt'
    save_weights(again, model, record)
    first, _, _ = load_weights(tiny_weights)
    for (name, a), (_, b) in zip(first.state_dict().items(), model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert again.read_bytes() == tiny_weights.read_bytes()


def test_learned_training_seed_changes_the_weights(encoder: SentenceEncoder,
                                                   tiny_weights: Path) -> None:
    from dataclasses import replace

    model, _ = train_learned_teacher(replace(TINY, seed=1), encoder)
    first, _, _ = load_weights(tiny_weights)
    assert not torch.equal(first.head.weight, model.head.weight)


def test_learned_seeds_are_disjoint_from_evaluation_seeds() -> None:
    from relkd_core.cli.bench import SPLITS

    evaluation = {seed for _, _, seed in SPLITS} | {0, 1, 2, 7}  # paper, demo, test bags
    assert not evaluation & {*TRAIN_SEEDS, HELD_OUT_SEED}
    assert HELD_OUT_SEED not in TRAIN_SEEDS


def test_learned_features_are_unit_rows_of_the_text_dimension(encoder: SentenceEncoder,
                                                              tiny_weights: Path) -> None:
    teacher = LearnedTeacher(LearnedTeacherConfig(weights=str(tiny_weights)), encoder)
    rgb = np.random.default_rng(0).integers(0, 256, (224, 400, 3), dtype=np.uint8)
    odd = np.random.default_rng(1).integers(0, 256, (130, 417, 3), dtype=np.uint8)
    grids = teacher.image_features([TeacherImage(rgb=rgb, camera='CAM_FRONT', t_ns=0),
                                    TeacherImage(rgb=odd, camera='CAM_LEFT', t_ns=0)])
    assert grids[0].features.shape == (14, 25, MINILM_DIM)
    assert grids[1].features.shape == (9, 27, MINILM_DIM)  # ceil(130/16), ceil(417/16)
    for grid in grids:
        np.testing.assert_allclose(np.linalg.norm(grid.features, axis=2), 1.0, atol=1e-5)
    text = teacher.text_features(Vocabulary.default())
    assert text.shape == (16, MINILM_DIM)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)


def test_learned_teacher_ignores_ground_truth(encoder: SentenceEncoder,
                                              tiny_weights: Path) -> None:
    teacher = LearnedTeacher(LearnedTeacherConfig(weights=str(tiny_weights)), encoder)
    rgb = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    semantic = np.full((64, 96), 4, np.uint16)
    with_gt, without = teacher.image_features([
        TeacherImage(rgb=rgb, camera='a', t_ns=0, semantic=semantic),
        TeacherImage(rgb=rgb, camera='a', t_ns=0)])
    np.testing.assert_array_equal(with_gt.features, without.features)


def test_learned_teacher_is_frozen(encoder: SentenceEncoder, tiny_weights: Path) -> None:
    teacher = LearnedTeacher(LearnedTeacherConfig(weights=str(tiny_weights)), encoder)
    with pytest.raises(TeacherError, match='frozen'):
        teacher.train(True)
    teacher._model.requires_grad_(True)
    rgb = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(TeacherError, match='unfrozen'):
        teacher.image_features([TeacherImage(rgb=rgb, camera='a', t_ns=0)])


def test_learned_weights_missing_or_foreign(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match='no such file'):
        load_weights(tmp_path / 'absent.pt')
    foreign = tmp_path / 'foreign.pt'
    torch.save({'format': 'something else'}, foreign)
    with pytest.raises(TeacherError, match='expected format'):
        load_weights(foreign)


def test_patch_encoder_stages_must_make_the_patch() -> None:
    with pytest.raises(TeacherError, match='must equal patch_size_px'):
        PatchEncoder(PatchEncoderConfig(widths=(4, 4), input_downsample=1, patch_size_px=16))
    model = PatchEncoder(PatchEncoderConfig(widths=(4, 4, 4), input_downsample=2,
                                            patch_size_px=16))
    assert model(torch.zeros(1, 3, 224, 400)).shape == (1, MINILM_DIM, 14, 25)


def test_cell_targets_are_class_shares() -> None:
    semantic = np.zeros((16, 32), np.uint16)
    semantic[:, 16:24] = 3  # half of the second cell is class 3
    targets = cell_targets(semantic, 16)
    assert targets.shape == (1, 2, 17)
    np.testing.assert_allclose(targets[0, 0, 0], 1.0)
    np.testing.assert_allclose(targets[0, 1, [0, 3]], [0.5, 0.5])


def test_build_teacher_learned_and_prepare_without_semantic_images(
        tiny_weights: Path, tiny_bags: dict, tmp_path: Path) -> None:
    from relkd_core.cli.prepare import main
    from relkd_core.data.prepared import PreparedDataset
    from relkd_core.resources import find_named_config

    config = tmp_path / 'learned.yaml'
    config.write_text(yaml.safe_dump({'weights': str(tiny_weights)}))
    teacher = build_teacher('learned', config)
    # A preset without the ground-truth image topics: the cameras carry RGB only.
    preset = yaml.safe_load(find_named_config('presets', 'synth-kitti').read_text())
    for camera in preset['cameras']:
        camera.pop('semantic_topic', None)
        camera.pop('instance_topic', None)
    preset_path = tmp_path / 'rgb-only.yaml'
    preset_path.write_text(yaml.safe_dump(preset))
    out = tmp_path / 'prepared'
    assert main(['--bag', str(tiny_bags[('kitti', 'mcap')]), '--preset', str(preset_path),
                 '--teacher', 'learned', '--teacher-config', str(config),
                 '--out', str(out)]) == 0
    dataset = PreparedDataset(out)
    assert dataset.teacher_id == teacher.teacher_id and dataset.feature_dim == MINILM_DIM
    frame = dataset[0]
    assert frame.pair_features is not None and len(frame.pair_features)
    np.testing.assert_allclose(np.linalg.norm(frame.pair_features, axis=1), 1.0, atol=5e-3)
