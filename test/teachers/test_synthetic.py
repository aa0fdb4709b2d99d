"""Tests for the simulated VLM (relkd_core.teachers.synthetic)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relkd_core.config import load_config
from relkd_core.errors import ConfigError, TeacherError
from relkd_core.taxonomy import LABEL_OF
from relkd_core.teachers import build_teacher
from relkd_core.teachers.base import TeacherImage, sample_grid
from relkd_core.teachers.evaluate import zero_shot_pixels
from relkd_core.teachers.minilm import SentenceEncoder
from relkd_core.teachers.synthetic import SyntheticTeacher, SyntheticTeacherConfig
from relkd_core.teachers.vocabulary import Vocabulary

CONFIG = Path(__file__).resolve().parents[2] / 'config' / 'teachers'
#: Real MaskCLIP on driving data scores roughly 25-45 mIoU; so must the simulated VLM.
MIOU_BAND = (0.25, 0.45)


def _teacher(encoder: SentenceEncoder, **changes: Any) -> SyntheticTeacher:
    return SyntheticTeacher(dataclasses.replace(SyntheticTeacherConfig(), **changes), encoder)


def _flat_image(camera: str, t_ns: int, label: int, instance_id: int,
                size: tuple[int, int] = (64, 48)) -> TeacherImage:
    width, height = size
    return TeacherImage(rgb=np.zeros((height, width, 3), np.uint8), camera=camera, t_ns=t_ns,
                        semantic=np.full((height, width), label, np.uint16),
                        instance=np.full((height, width), instance_id, np.uint32))


def test_synthetic_features_are_patch_grids_of_unit_vectors(encoder: SentenceEncoder) -> None:
    rng = np.random.default_rng(0)
    image = TeacherImage(rgb=np.zeros((224, 400, 3), np.uint8), camera='CAM_FRONT', t_ns=5,
                         semantic=rng.integers(0, 17, (224, 400)).astype(np.uint16),
                         instance=np.zeros((224, 400), np.uint32))
    (grid,) = _teacher(encoder).image_features([image])
    assert grid.features.shape == (14, 25, 384)
    assert grid.features.dtype == np.float32
    assert grid.image_size_px == (400, 224)
    np.testing.assert_allclose(np.linalg.norm(grid.features, axis=-1), 1.0, atol=1e-5)


def test_synthetic_features_do_not_depend_on_order_or_batching(
        encoder: SentenceEncoder, kitti_images: list[TeacherImage]) -> None:
    images = kitti_images[:4]
    together = _teacher(encoder).image_features(images)
    alone = [_teacher(encoder).image_features([image])[0] for image in reversed(images)][::-1]
    for first, second in zip(together, alone, strict=True):
        np.testing.assert_array_equal(first.features, second.features)


def test_synthetic_instance_bias_follows_the_object_across_frames(
        encoder: SentenceEncoder) -> None:
    # Without per-cell noise and blur, a car filling the image looks the same in any frame and
    # camera: its confusion and bias are seeded by its instance id.
    teacher = _teacher(encoder, pixel_noise=0.0)
    car = LABEL_OF['car']
    same, moved, other = teacher.image_features([
        _flat_image('CAM_FRONT', 100, car, 7), _flat_image('CAM_BACK', 999, car, 7),
        _flat_image('CAM_FRONT', 100, car, 8)])
    np.testing.assert_allclose(same.features, moved.features, atol=1e-6)
    assert np.abs(same.features - other.features).max() > 1e-3


def test_synthetic_free_text_vehicle_scores_higher_on_vehicles_than_on_road(
        encoder: SentenceEncoder, kitti_images: list[TeacherImage]) -> None:
    teacher = _teacher(encoder)
    vehicle = teacher.text_features(Vocabulary.from_names(['vehicle']))[0]
    on_vehicles, on_road = [], []
    for image, grid in zip(kitti_images, teacher.image_features(kitti_images), strict=True):
        assert image.semantic is not None
        v, u = np.nonzero(image.semantic[::3, ::3] > 0)  # every 9th pixel is plenty
        v, u = 3 * v, 3 * u
        scores = sample_grid(grid, np.stack([u, v], axis=1).astype(np.float64)) @ vehicle
        labels = image.semantic[v, u]
        on_vehicles.append(scores[np.isin(labels, [LABEL_OF[n] for n in
                                                   ('car', 'truck', 'bus', 'trailer')])])
        on_road.append(scores[labels == LABEL_OF['driveable_surface']])
    assert np.concatenate(on_vehicles).mean() > np.concatenate(on_road).mean() + 0.02


def test_synthetic_zero_shot_miou_is_in_the_maskclip_band(
        encoder: SentenceEncoder, kitti_images: list[TeacherImage]) -> None:
    result = zero_shot_pixels(_teacher(encoder), Vocabulary.default(), kitti_images)
    assert MIOU_BAND[0] <= result.miou <= MIOU_BAND[1]
    assert result.num_samples > 0.5 * sum(image.rgb.shape[0] * image.rgb.shape[1]
                                          for image in kitti_images)


def test_synthetic_zero_shot_miou_falls_as_noise_grows(
        encoder: SentenceEncoder, kitti_images: list[TeacherImage]) -> None:
    vocabulary = Vocabulary.default()
    mious = [zero_shot_pixels(_teacher(encoder, pixel_noise=noise), vocabulary, kitti_images).miou
             for noise in (0.0, 0.7, 1.5, 3.0)]
    assert all(high > low for high, low in itertools.pairwise(mious)), mious


def test_synthetic_zero_shot_without_degradation_is_limited_only_by_patches(
        encoder: SentenceEncoder, kitti_images: list[TeacherImage]) -> None:
    clean = _teacher(encoder, pixel_noise=0.0, instance_noise=0.0, confusion=0.0,
                     context_mixing=0.0, boundary_blur_patches=0.0, modality_gap=0.0)
    result = zero_shot_pixels(clean, Vocabulary.default(), kitti_images)
    assert result.miou > 0.55  # far above the band: the degradations do the damage


def test_synthetic_text_features_are_deterministic_unit_vectors(encoder: SentenceEncoder) -> None:
    vocabulary = Vocabulary.default()
    first = _teacher(encoder).text_features(vocabulary)
    second = SyntheticTeacher(SyntheticTeacherConfig(), SentenceEncoder()).text_features(vocabulary)
    assert first.shape == (16, 384)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(first, second, atol=1e-6)


def test_synthetic_teacher_needs_semantic_images(encoder: SentenceEncoder) -> None:
    image = TeacherImage(rgb=np.zeros((8, 8, 3), np.uint8), camera='CAM_FRONT', t_ns=3)
    with pytest.raises(TeacherError, match='needs a bag with ground-truth semantic images'):
        _teacher(encoder).image_features([image])


@pytest.mark.parametrize(('semantic', 'message'), [
    (np.zeros((4, 8), np.uint16), r'semantic image has shape \(4, 8\), the rgb image \(8, 8\)'),
    (np.full((8, 8), 40, np.uint16), r'semantic labels must be in 0..16, got 40'),
])
def test_synthetic_teacher_rejects_bad_ground_truth(encoder: SentenceEncoder,
                                                    semantic: np.ndarray, message: str) -> None:
    image = TeacherImage(rgb=np.zeros((8, 8, 3), np.uint8), camera='c', t_ns=3, semantic=semantic)
    with pytest.raises(TeacherError, match=message):
        _teacher(encoder).image_features([image])


def test_synthetic_teacher_is_frozen(encoder: SentenceEncoder) -> None:
    with pytest.raises(TeacherError, match='is frozen'):
        _teacher(encoder).train(True)


def test_synthetic_teacher_id_changes_with_the_config(encoder: SentenceEncoder) -> None:
    assert _teacher(encoder).teacher_id == _teacher(encoder).teacher_id
    assert _teacher(encoder).teacher_id != _teacher(encoder, pixel_noise=1.0).teacher_id
    assert _teacher(encoder).teacher_id.startswith('synthetic-')


def test_build_teacher_synthetic_reads_the_shipped_config_and_overrides() -> None:
    teacher = build_teacher('synthetic', CONFIG / 'synthetic.yaml', ['pixel_noise=1.25'])
    assert isinstance(teacher, SyntheticTeacher)
    assert teacher.config == dataclasses.replace(SyntheticTeacherConfig(), pixel_noise=1.25)
    assert teacher.feature_dim == 384


def test_synthetic_config_file_holds_the_code_defaults() -> None:
    assert load_config(SyntheticTeacherConfig, CONFIG / 'synthetic.yaml') == \
        SyntheticTeacherConfig()


@pytest.mark.parametrize(('overrides', 'message'), [
    (['confusion=0.9'], r'confusion: expected a value in \[0.0, 0.5\]'),
    (['prompt_templates=["a photo"]'], "must contain '{}' once"),
    (['pixel_nose=1'], "did you mean 'pixel_noise'"),
])
def test_build_teacher_synthetic_rejects_bad_config(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_teacher('synthetic', None, overrides)


def test_build_teacher_rejects_an_unknown_name() -> None:
    with pytest.raises(TeacherError, match=r"unknown teacher 'clip'; expected one of"):
        build_teacher('clip', None)  # type: ignore[arg-type]


def test_sentence_encoder_loads_without_a_progress_bar(capfd: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as transformers_logging

    SentenceEncoder().encode(['a person walking'])
    assert 'Loading weights' not in capfd.readouterr().err
    assert transformers_logging.is_progress_bar_enabled()  # restored for the rest of the process
