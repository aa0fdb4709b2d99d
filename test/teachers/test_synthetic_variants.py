"""The simulated VLM's variants: the direction of the modality gap and same-class bias."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from relkd_core.resources import find_named_config
from relkd_core.teachers import TeacherImage, build_teacher
from relkd_core.teachers.minilm import SentenceEncoder
from relkd_core.teachers.synthetic import SyntheticTeacher, SyntheticTeacherConfig


def _teacher(encoder: SentenceEncoder, **changes: Any) -> SyntheticTeacher:
    return SyntheticTeacher(SyntheticTeacherConfig(**changes), encoder)


def _two_cars(label: int = 4) -> TeacherImage:
    """Two objects of one class side by side (instance ids 1 and 2) on a road."""
    semantic = np.full((64, 128), 11, np.uint16)
    instance = np.zeros((64, 128), np.uint32)
    semantic[16:48, 8:56] = label
    instance[16:48, 8:56] = 1
    semantic[16:48, 72:120] = label
    instance[16:48, 72:120] = 2
    rgb = np.zeros((64, 128, 3), np.uint8)
    return TeacherImage(rgb=rgb, camera='CAM_FRONT', t_ns=0, semantic=semantic,
                        instance=instance)


def test_synthetic_gap_modes_random_orthogonal_none(encoder: SentenceEncoder) -> None:
    concepts = _teacher(encoder).concept_embeddings()
    random_gap = _teacher(encoder).modality_gap_vector()
    orthogonal = _teacher(encoder, modality_gap_mode='orthogonal').modality_gap_vector()
    none = _teacher(encoder, modality_gap_mode='none').modality_gap_vector()
    assert np.linalg.norm(random_gap) == pytest.approx(0.8, rel=1e-5)
    assert np.linalg.norm(orthogonal) == pytest.approx(0.8, rel=1e-5)
    assert np.abs(concepts @ random_gap).max() > 0.05  # leans towards some classes
    assert np.abs(concepts @ orthogonal).max() < 1e-5  # a pure shift between the cones
    assert not none.any()


def test_synthetic_orthogonal_gap_keeps_rankings_against_class_text(
        encoder: SentenceEncoder) -> None:
    """Without noise, the orthogonal gap changes no argmax over the class concepts."""
    quiet = dict(instance_noise=0.0, pixel_noise=0.0, confusion=0.0)
    image = _two_cars()
    plain = _teacher(encoder, modality_gap_mode='none', **quiet).image_features([image])[0]
    shifted = _teacher(encoder, modality_gap_mode='orthogonal', **quiet).image_features(
        [image])[0]
    concepts = _teacher(encoder).concept_embeddings()
    np.testing.assert_array_equal((plain.features @ concepts.T).argmax(-1),
                                  (shifted.features @ concepts.T).argmax(-1))


def test_synthetic_class_bias_share_raises_same_class_similarity(
        encoder: SentenceEncoder) -> None:
    image = _two_cars()

    def car_similarity(share: float) -> float:
        grid = _teacher(encoder, pixel_noise=0.0, confusion=0.0, modality_gap_mode='none',
                        class_bias_share=share).image_features([image])[0].features
        left, right = grid[2, 1], grid[2, 6]  # patch centres inside car 1 and car 2
        return float(left @ right)

    assert car_similarity(1.0) > car_similarity(0.0) + 0.05


def test_synthetic_defaults_are_unchanged_by_the_variants(encoder: SentenceEncoder) -> None:
    image = _two_cars()
    default = _teacher(encoder).image_features([image])[0].features
    explicit = _teacher(encoder, modality_gap_mode='random', class_bias_share=0.0
                        ).image_features([image])[0].features
    np.testing.assert_array_equal(default, explicit)


def test_synthetic_variant_configs_load_and_differ_only_in_the_gap() -> None:
    orthogonal = build_teacher('synthetic', find_named_config(
        'teachers', 'synthetic-orthogonal-gap'))
    none = build_teacher('synthetic', find_named_config('teachers', 'synthetic-no-gap'))
    assert isinstance(orthogonal, SyntheticTeacher) and isinstance(none, SyntheticTeacher)
    assert orthogonal.config.modality_gap_mode == 'orthogonal'
    assert none.config.modality_gap_mode == 'none'
    default = SyntheticTeacherConfig()
    for config in (orthogonal.config, none.config):
        assert {k for k in vars(default) if getattr(default, k) != getattr(config, k)} == {
            'modality_gap_mode'}


def test_synthetic_gap_mode_is_validated() -> None:
    from relkd_core.errors import ConfigError

    with pytest.raises(ConfigError, match='modality_gap_mode'):
        build_teacher('synthetic', None, ['modality_gap_mode=sideways'])
