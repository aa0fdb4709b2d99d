"""Tests for the open_clip MaskCLIP teacher on a random-init tiny ViT (no weights needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional

from relkd_core.config import load_config
from relkd_core.errors import TeacherError
from relkd_core.teachers import build_teacher
from relkd_core.teachers.base import TeacherImage
from relkd_core.teachers.openclip import OpenClipTeacher, OpenClipTeacherConfig
from relkd_core.teachers.vocabulary import Vocabulary

CONFIG = Path(__file__).resolve().parents[2] / 'config' / 'teachers'


def _teacher(model_name: str, **changes: object) -> OpenClipTeacher:
    return OpenClipTeacher(OpenClipTeacherConfig(model_name=model_name, pretrained=None,
                                                 **changes))  # type: ignore[arg-type]


def _images(sizes: list[tuple[int, int]]) -> list[TeacherImage]:
    rng = np.random.default_rng(0)
    return [TeacherImage(rgb=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                         camera='CAM_FRONT', t_ns=i) for i, (width, height) in enumerate(sizes)]


def test_openclip_value_path_equals_attention_restricted_to_the_diagonal(tiny_vit: str) -> None:
    teacher = _teacher(tiny_vit)
    (image,) = _images([(64, 64)])  # the model's native size: no position resizing
    (grid,) = teacher.image_features([image])

    # Reference: open_clip's own forward up to the last block's ln_1 (caught by a hook), then
    # that block's nn.MultiheadAttention with every token attending only to itself.
    visual = teacher._model.visual
    captured: dict[str, torch.Tensor] = {}
    last = visual.transformer.resblocks[-1]
    hook = last.ln_1.register_forward_hook(lambda _m, _i, out: captured.setdefault('x', out))
    pixels = torch.from_numpy(image.rgb).permute(2, 0, 1)[None].float() / 255.0
    mean, std = visual.preprocess_cfg['mean'], visual.preprocess_cfg['std']
    pixels = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        visual(pixels)
        hook.remove()
        tokens = captured['x']
        length = tokens.shape[1]
        diagonal_only = torch.full((length, length), float('-inf')).fill_diagonal_(0.0)
        attended = last.attn(tokens, tokens, tokens, attn_mask=diagonal_only,
                             need_weights=False)[0]
        reference = visual.ln_post(attended[:, 1:]) @ visual.proj
        reference = functional.normalize(reference, dim=-1).reshape(4, 4, -1).numpy()
    np.testing.assert_allclose(grid.features, reference, atol=1e-5)


def test_openclip_dense_features_are_unit_grids_of_any_image_size(tiny_vit: str) -> None:
    teacher = _teacher(tiny_vit, batch_size=2)
    images = _images([(400, 224), (416, 128), (400, 224), (400, 224)])
    grids = teacher.image_features(images)
    assert [g.features.shape for g in grids] == [(14, 25, 32), (8, 26, 32)] + [(14, 25, 32)] * 2
    assert [g.image_size_px for g in grids] == [(400, 224), (416, 128), (400, 224), (400, 224)]
    for grid in grids:
        assert grid.features.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(grid.features, axis=-1), 1.0, atol=1e-5)
    # Batching does not change a grid: image 2 alone equals image 2 batched with image 3.
    alone = teacher.image_features(images[2:3])[0]
    np.testing.assert_allclose(alone.features, grids[2].features, atol=1e-5)


def test_openclip_image_scale_changes_the_grid(tiny_vit: str) -> None:
    (grid,) = _teacher(tiny_vit, image_scale=2.0).image_features(_images([(400, 224)]))
    assert grid.features.shape == (28, 50, 32)


def test_openclip_text_embeddings_are_deterministic_unit_vectors(tiny_vit: str) -> None:
    vocabulary = Vocabulary.from_names(['car', 'driveable_surface', 'vehicle'])
    first = _teacher(tiny_vit).text_features(vocabulary)
    second = _teacher(tiny_vit).text_features(vocabulary)
    assert first.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first[0], first[1])


def test_openclip_random_init_is_seeded(tiny_vit: str) -> None:
    image = _images([(64, 64)])
    same = [_teacher(tiny_vit).image_features(image)[0].features for _ in range(2)]
    other = _teacher(tiny_vit, init_seed=1).image_features(image)[0].features
    np.testing.assert_array_equal(same[0], same[1])
    assert np.abs(same[0] - other).max() > 1e-3
    assert _teacher(tiny_vit).teacher_id != _teacher(tiny_vit, init_seed=1).teacher_id


def test_openclip_teacher_is_frozen(tiny_vit: str) -> None:
    teacher = _teacher(tiny_vit)
    assert not any(p.requires_grad for p in teacher._model.parameters())
    with pytest.raises(TeacherError, match=r'is frozen: train\(True\)'):
        teacher.train(True)
    with pytest.raises(TeacherError, match=r'requires_grad_\(True\) is not allowed'):
        teacher.requires_grad_(True)
    # Unfreezing the module behind the teacher's back is caught before the next forward pass.
    teacher._model.visual.proj.requires_grad_(True)
    with pytest.raises(TeacherError, match='was unfrozen'):
        teacher.image_features(_images([(64, 64)]))


def test_openclip_missing_checkpoint_names_the_file(tiny_vit: str, tmp_path: Path) -> None:
    missing = tmp_path / 'vit.safetensors'
    with pytest.raises(TeacherError, match=f'checkpoint_path: {missing} not found'):
        _teacher(tiny_vit, checkpoint_path=missing)


def test_openclip_checkpoint_file_loads_and_sets_the_id(tiny_vit: str, tmp_path: Path) -> None:
    source = _teacher(tiny_vit, init_seed=5)
    path = tmp_path / 'tiny.pt'
    torch.save(source._model.state_dict(), path)
    loaded = _teacher(tiny_vit, checkpoint_path=path)
    image = _images([(64, 64)])
    np.testing.assert_array_equal(loaded.image_features(image)[0].features,
                                  source.image_features(image)[0].features)
    assert loaded.teacher_id != source.teacher_id


def test_openclip_offline_without_weights_says_which_file_to_provide(tmp_path: Path) -> None:
    config = OpenClipTeacherConfig(model_name='ViT-B-16', pretrained='openai', cache_dir=tmp_path)
    with pytest.raises(TeacherError, match=(
            r'ViT-B-16 \(pretrained .openai.\) are not on this machine\. Provide the file: '
            r'.*timm/vit_base_patch16_clip_224\.openai/resolve/main/open_clip_model\.safetensors'
            r'.*set checkpoint_path: /path/to/open_clip_model\.safetensors and '
            r'force_quick_gelu: true')):
        OpenClipTeacher(config)


@pytest.mark.parametrize(('changes', 'message'), [
    ({'model_name': 'ViT-B-61'}, r"unknown open_clip model 'ViT-B-61'; close names: \['ViT-B-16"),
    ({'model_name': 'ViT-B-16', 'pretrained': 'nonsense'}, "no weights tagged 'nonsense'"),
])
def test_openclip_rejects_unknown_models_and_tags(changes: dict[str, str], message: str) -> None:
    with pytest.raises(TeacherError, match=message):
        OpenClipTeacher(OpenClipTeacherConfig(**changes))  # type: ignore[arg-type]


def test_build_teacher_openclip_uses_the_config_and_overrides(tiny_vit: str) -> None:
    teacher = build_teacher('openclip', CONFIG / 'openclip-vit-b-16.yaml',
                            [f'model_name={tiny_vit}', 'pretrained=null'])
    assert isinstance(teacher, OpenClipTeacher)
    assert teacher.feature_dim == 32
    assert teacher.teacher_id.startswith('openclip-')


def test_openclip_config_file_holds_the_code_defaults() -> None:
    assert load_config(OpenClipTeacherConfig, CONFIG / 'openclip-vit-b-16.yaml') == \
        OpenClipTeacherConfig()
