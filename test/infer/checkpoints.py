"""Tiny random-init student checkpoints and a deterministic fake text encoder for runtime tests.

Imported as ``infer.checkpoints`` by the ROS and CLI tests (``test/`` is on ``sys.path``).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from relkd_core.models import StudentConfig
from relkd_core.models.distilled import (
    DistilledStudent,
    StudentCheckpoint,
    TeacherRef,
    save_checkpoint,
)
from relkd_core.teachers.vocabulary import Vocabulary

TEACHER_ID = 'fake-0123456789ab'
TEACHER_DIM = 16
TINY_CONFIG = StudentConfig(variant='14', width_multiplier=0.125, out_dim=8, voxel_size_m=0.5,
                            voxelization='cartesian')
STORED_NAMES = ('car', 'road', 'vegetation')


class FakeTextEncoder:
    """Embeds each prompt as a unit vector drawn from a generator seeded by its text, so any
    text gets a stable, distinct embedding; counts calls."""

    def __init__(self, teacher_id: str = TEACHER_ID, dim: int = TEACHER_DIM) -> None:
        self.teacher_id = teacher_id
        self.dim = dim
        self.calls = 0

    def text_features(self, vocabulary: Vocabulary) -> NDArray[np.float32]:
        self.calls += 1
        rows = []
        for prompts in vocabulary.prompts:
            vectors = [np.random.default_rng(zlib.crc32(p.encode())).standard_normal(self.dim)
                       for p in prompts]
            mean = np.mean(vectors, axis=0)
            rows.append(mean / np.linalg.norm(mean))
        return np.asarray(rows, dtype=np.float32)


def tiny_checkpoint(seed: int = 0, teacher: TeacherRef | None = None,
                    config: StudentConfig = TINY_CONFIG) -> StudentCheckpoint:
    """A random-init student with stored embeddings of :data:`STORED_NAMES` (fake encoder)."""
    torch.manual_seed(seed)
    model = DistilledStudent(config, TEACHER_DIM).eval()
    vocabulary = Vocabulary.from_names(STORED_NAMES)
    embeddings = torch.from_numpy(FakeTextEncoder().text_features(vocabulary))
    return StudentCheckpoint(
        student_config=config,
        teacher=teacher or TeacherRef(name='fake', config=None, id=TEACHER_ID),
        teacher_dim=TEACHER_DIM, state_dict=model.state_dict(), vocabulary=vocabulary,
        text_embeddings=embeddings, step=1)


def write_tiny_checkpoint(path: Path, seed: int = 0,
                          config: StudentConfig = TINY_CONFIG) -> Path:
    save_checkpoint(path, tiny_checkpoint(seed, config=config))
    return path


def synthetic_scan(num_points: int, seed: int = 0, scale_m: float = 20.0) -> NDArray[np.float32]:
    """(N, 4) float32 xyzi: a ground plane and a blob, so voxels have neighbours."""
    rng = np.random.default_rng(seed)
    half = num_points // 2
    ground = np.column_stack([rng.uniform(-scale_m, scale_m, half),
                              rng.uniform(-scale_m, scale_m, half),
                              rng.normal(-1.5, 0.05, half)])
    blob = rng.normal(0.0, scale_m / 4, size=(num_points - half, 3)) + np.array([3.0, -1.0, 0.0])
    intensity = rng.uniform(0.0, 1.0, size=(num_points, 1))
    return np.concatenate([np.concatenate([ground, blob]), intensity], axis=1).astype(np.float32)
