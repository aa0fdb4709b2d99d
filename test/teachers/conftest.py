"""Shared fixtures of the teacher tests: one loaded text model, a few synthetic frames, and a
random-init tiny open_clip ViT."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.rig import RIGS
from relkd_core.teachers.base import TeacherImage
from relkd_core.teachers.minilm import SentenceEncoder

#: A 2-block, 64-wide ViT-B/16 look-alike (16 px patches, 64 px native size): 3.4M parameters,
#: most of them the token embedding of the real CLIP tokenizer.
TINY_VIT = 'relkd-tiny-vit-16'
TINY_VIT_CONFIG = {
    'embed_dim': 32,
    'vision_cfg': {'image_size': 64, 'layers': 2, 'width': 64, 'patch_size': 16,
                   'head_width': 32},
    'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 64, 'heads': 2,
                 'layers': 2},
}


@pytest.fixture(scope='session')
def encoder() -> SentenceEncoder:
    """The MiniLM text model, loaded once for the whole session (about 3 s)."""
    text_model = SentenceEncoder()
    text_model.encode(['car'])
    return text_model


@pytest.fixture(scope='session')
def kitti_images() -> list[TeacherImage]:
    """6 frames x 2 cameras (416x128) of the kitti rig, 1 s apart, with ground truth."""
    drive = SyntheticDrive(RIGS['kitti'], 60, seed=3)
    return [TeacherImage(rgb=shot.images.rgb, camera=shot.camera.name, t_ns=shot.t_ns,
                         semantic=shot.images.semantic, instance=shot.images.instance)
            for index in range(0, 60, 10) for shot in drive.frame(index).shots]


@pytest.fixture
def tiny_vit() -> Iterator[str]:
    """Register the tiny ViT with open_clip for one test, then remove it again."""
    from relkd_core.teachers.openclip import _import_open_clip

    configs = _import_open_clip().factory._MODEL_CONFIGS
    configs[TINY_VIT] = TINY_VIT_CONFIG
    yield TINY_VIT
    configs.pop(TINY_VIT, None)
