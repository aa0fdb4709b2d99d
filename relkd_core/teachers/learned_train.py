"""Training of the learned teacher (:mod:`relkd_core.teachers.learned`), bit-for-bit from a seed.

Data: synthetic drives of the nuScenes-like rig whose scene seeds are disjoint from every
seed an evaluation uses (the demo's 0-2, ``relkd-bench paper``'s 100/200/300, the tests'
small seeds): :data:`TRAIN_SEEDS`, and :data:`HELD_OUT_SEED` for the teacher's own score.
Target of a 16 px cell: the mixture of classes (label 0, sky, included) over its pixels.
Loss: cross-entropy of that mixture against softmax over classes of
``cos(feature, text_class) / temperature`` (LSeg's objective at patch level). Horizontal flips
as the only augmentation.

Deterministic: ``torch.manual_seed(seed)``, one torch thread, deterministic algorithms, batch
order and flips from ``numpy.random.default_rng(seed)``. The same settings give the same
weights file, byte for byte, on one machine and library version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from relkd_core.errors import TeacherError
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.rig import RIGS
from relkd_core.taxonomy import CLASS_NAMES, NUM_CLASSES
from relkd_core.teachers.base import grid_shape, normalize_rows
from relkd_core.teachers.learned import PatchEncoder, PatchEncoderConfig
from relkd_core.teachers.minilm import SentenceEncoder
from relkd_core.teachers.vocabulary import DEFAULT_PROMPTS

__all__ = ['HELD_OUT_SEED', 'TRAIN_SEEDS', 'LearnedTrainConfig', 'concept_embeddings',
           'render_images', 'train_learned_teacher', 'training_record']

LOG = logging.getLogger(__name__)

#: Scene seeds of the training drives and of the held-out drive (disjoint from every seed
#: used for evaluation anywhere in the project).
TRAIN_SEEDS = (7001, 7002, 7003, 7004, 7005, 7006)
HELD_OUT_SEED = 7100


@dataclass(frozen=True, kw_only=True)
class LearnedTrainConfig:
    """Everything that decides the weights. ``frames_per_drive`` frames are taken every
    ``frame_stride`` lidar frames (0.25 s at 20 Hz for 5) of each drive in ``drive_seeds``."""

    seed: int = 0
    drive_seeds: tuple[int, ...] = TRAIN_SEEDS
    frames_per_drive: int = 10
    frame_stride: int = 5
    rig: str = 'nuscenes'
    widths: tuple[int, ...] = (24, 48, 96)
    input_downsample: int = 2
    patch_size_px: int = 16
    steps: int = 250
    batch_size: int = 8
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    temperature: float = 0.07
    ignore_prompt: str = 'sky'


def concept_embeddings(encoder: SentenceEncoder, ignore_prompt: str = 'sky'
                       ) -> NDArray[np.float32]:
    """(17, 384) unit rows: the MiniLM embedding of label 0 (``ignore_prompt``) and of the
    default prompts of labels 1..16, each the mean over its prompts (as the teachers embed
    a vocabulary with the '{}' template)."""
    rows = [normalize_rows(encoder.encode([ignore_prompt]).mean(axis=0))]
    rows += [normalize_rows(encoder.encode(list(DEFAULT_PROMPTS[n])).mean(axis=0))
             for n in CLASS_NAMES]
    return np.stack(rows).astype(np.float32)


def render_images(rig: str, seed: int, frames: int, stride: int
                  ) -> list[tuple[NDArray[np.uint8], NDArray[np.uint16]]]:
    """(rgb (H, W, 3) uint8, semantic (H, W) uint16) of every camera of ``frames`` frames,
    ``stride`` lidar frames apart, of the drive with scene seed ``seed``."""
    drive = SyntheticDrive(RIGS[rig], frames * stride, seed)
    out = []
    for index in range(0, frames * stride, stride):
        for shot in drive.frame(index).shots:
            out.append((shot.images.rgb, shot.images.semantic.astype(np.uint16)))
    return out


def cell_targets(semantic: NDArray[np.integer], patch_px: int) -> NDArray[np.float32]:
    """(Hg, Wg, 17) float32: the share of each label 0..16 among a cell's pixels."""
    height, width = semantic.shape
    rows, cols = grid_shape((width, height), patch_px)
    v, u = np.divmod(np.arange(height * width), width)
    cell = (v // patch_px) * cols + u // patch_px
    counts = np.bincount(cell * (NUM_CLASSES + 1) + semantic.ravel().astype(np.int64),
                         minlength=rows * cols * (NUM_CLASSES + 1)).reshape(rows, cols, -1)
    return (counts / counts.sum(axis=2, keepdims=True)).astype(np.float32)


def train_learned_teacher(config: LearnedTrainConfig, encoder: SentenceEncoder,
                          progress: Callable[[int, float, PatchEncoder], None] | None = None
                          ) -> tuple[PatchEncoder, dict[str, Any]]:
    """Train the network; returns it (eval mode, frozen) and the training record (settings,
    final loss) that goes into the weights file. ``progress(step, loss, model)`` is called
    after every step.

    The learning rate is constant after a linear warm-up of ``warmup_steps``, so the weights
    after k steps do not depend on ``steps``: a run of 1200 steps passes through the weights
    of the run of 600 (what the learning-length sweep of ``relkd-bench learned-teacher``
    relies on).
    """
    if config.rig not in RIGS:
        raise TeacherError(f'rig {config.rig!r}: expected one of {sorted(RIGS)}')
    started = time.perf_counter()
    images: list[NDArray[np.uint8]] = []
    targets: list[NDArray[np.float32]] = []
    for seed in config.drive_seeds:
        for image, semantic in render_images(config.rig, seed, config.frames_per_drive,
                                             config.frame_stride):
            images.append(image)
            targets.append(cell_targets(semantic, config.patch_size_px))
    concepts = torch.from_numpy(concept_embeddings(encoder, config.ignore_prompt))
    rgb_all = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    target_all = torch.from_numpy(np.stack(targets))  # (N, Hg, Wg, 17)

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(config.seed)
        model = PatchEncoder(PatchEncoderConfig(
            widths=config.widths, input_downsample=config.input_downsample,
            patch_size_px=config.patch_size_px))
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay)
        rng = np.random.default_rng(config.seed)
        model.train()
        loss_value = float('nan')
        for step in range(config.steps):
            scale = min(1.0, (step + 1) / max(1, config.warmup_steps))
            for group in optimizer.param_groups:
                group['lr'] = config.lr * scale
            batch = rng.choice(len(images), size=min(config.batch_size, len(images)),
                               replace=False)
            flips = rng.random(len(batch)) < 0.5
            rgb = rgb_all[torch.from_numpy(batch)]
            target = target_all[torch.from_numpy(batch)]
            flip = torch.from_numpy(flips)
            rgb = torch.where(flip[:, None, None, None], rgb.flip(3), rgb)
            target = torch.where(flip[:, None, None, None], target.flip(2), target)
            features = model(rgb).permute(0, 2, 3, 1)  # (B, Hg, Wg, D)
            logits = features @ concepts.T / config.temperature
            loss = -(target * functional.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_value = float(loss.detach())
            if progress is not None:
                progress(step + 1, loss_value, model)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    model.eval().requires_grad_(False)
    record = training_record(config, loss_value, len(images), encoder)
    LOG.info('learned teacher trained in %.0f s', time.perf_counter() - started)
    return model, record


def training_record(config: LearnedTrainConfig, final_loss: float, images: int,
                    encoder: SentenceEncoder) -> dict[str, Any]:
    """What the weights file records about the run that made it (no times, no paths: the
    same run gives the same bytes)."""
    return {'settings': _json_safe(asdict(config)), 'final_loss': round(final_loss, 5),
            'images': images, 'text_model': encoder.version}


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_json_safe(v) for v in value]
    return value
