"""The learned teacher: a small 2D network mapping RGB patches into the MiniLM text space.

LSeg-style (Li et al. 2022, "Language-driven Semantic Segmentation"): a convolutional image
encoder gives one feature per ``patch_size_px`` cell (16 px, the token grid of a ViT-B/16),
trained so that the cosine of a cell's feature with the MiniLM text embedding of each class,
over a temperature, is the logit of a cross-entropy against the class mixture of the cell
(:mod:`relkd_core.teachers.learned_train`). At run time it sees only the RGB image, like a real
VLM: no ground-truth semantic image, and its errors and its self-similarity come from what the
pixels look like, not from noise knobs. How good it is is set only by its capacity (stage
widths), input resolution (``input_downsample``), patch size and training length.

The text side is the synthetic teacher's: all-MiniLM-L6-v2 embeddings of the prompts, so any
free-text vocabulary works. The weights file (``config/teachers/learned.pt`` by default, a
few hundred kB) holds the network's architecture, its state dict and the training settings
that produced it; ``relkd-bench learned-teacher`` retrains it bit-for-bit from its seed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional

from relkd_core.atomic import write_atomic
from relkd_core.config import config_to_dict
from relkd_core.errors import TeacherError
from relkd_core.resources import config_dirs
from relkd_core.teachers.base import (
    FeatureGrid,
    Teacher,
    TeacherImage,
    check_frozen,
    grid_shape,
    make_teacher_id,
    normalize_rows,
)
from relkd_core.teachers.minilm import MINILM_DIM, SentenceEncoder
from relkd_core.teachers.vocabulary import Vocabulary

__all__ = ['WEIGHTS_FORMAT', 'LearnedTeacher', 'LearnedTeacherConfig', 'PatchEncoder',
           'PatchEncoderConfig', 'default_weights_path', 'load_weights', 'save_weights']

WEIGHTS_FORMAT = 'relkd-learned-teacher/1'
DEFAULT_WEIGHTS = 'learned.pt'  # in config/teachers/


@dataclass(frozen=True, kw_only=True)
class LearnedTeacherConfig:
    """``weights``: the weights file ('' = the shipped ``config/teachers/learned.pt``)."""

    weights: str = ''
    #: Each class embedding is the mean over prompts × templates; '{}' is the prompt itself.
    prompt_templates: tuple[str, ...] = ('{}',)
    device: str = 'cpu'

    def validate(self) -> None:
        for template in self.prompt_templates:
            if template.count('{}') != 1:
                raise ValueError(f"prompt_templates: {template!r} must contain '{{}}' once")


@dataclass(frozen=True, kw_only=True)
class PatchEncoderConfig:
    """Architecture: ``widths`` per stride-2 stage after an ``input_downsample`` average
    pooling; ``input_downsample * 2 ** len(widths)`` must equal ``patch_size_px``."""

    widths: tuple[int, ...] = (16, 32, 48, 64)
    input_downsample: int = 1
    patch_size_px: int = 16
    out_dim: int = MINILM_DIM

    def validate(self) -> None:
        if self.input_downsample * 2 ** len(self.widths) != self.patch_size_px:
            raise TeacherError(
                f'input_downsample {self.input_downsample} × 2^{len(self.widths)} stages must '
                f'equal patch_size_px {self.patch_size_px}; change widths or input_downsample')


class PatchEncoder(nn.Module):
    """RGB (B, 3, H, W) uint8-range floats → (B, out_dim, ceil(H/p), ceil(W/p)) unit features.

    Every stage halves the resolution (3×3 convolution, stride 2, padding 1: ceil(n/2)), so the
    grid is exactly :func:`~relkd_core.teachers.base.grid_shape` of the image.
    """

    def __init__(self, config: PatchEncoderConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        layers: list[nn.Module] = []
        channels = 3
        for width in config.widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                       nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, config.out_dim, 1)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = rgb / 255.0 - 0.5
        if self.config.input_downsample > 1:
            d = self.config.input_downsample
            x = functional.avg_pool2d(x, d, stride=d, ceil_mode=True)
        return functional.normalize(self.head(self.body(x)), dim=1)


def default_weights_path() -> Path:
    """``config/teachers/learned.pt`` of the first config folder that has it."""
    for folder in config_dirs():
        candidate = folder / 'teachers' / DEFAULT_WEIGHTS
        if candidate.is_file():
            return candidate
    raise TeacherError(f'the learned teacher\'s weights (config/teachers/{DEFAULT_WEIGHTS}) are '
                       'not installed; retrain them with relkd-bench learned-teacher, or set '
                       'weights: in the teacher config')


def save_weights(path: Path, model: PatchEncoder, training: dict[str, Any]) -> None:
    """Write the weights file atomically: format tag, architecture, state dict (float32,
    contiguous) and the training settings and report."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    payload = {'format': WEIGHTS_FORMAT, 'architecture': config_to_dict(model.config),
               'state_dict': state, 'training': training}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda stream: torch.save(payload, stream))


def load_weights(path: Path, device: str = 'cpu') -> tuple[PatchEncoder, dict[str, Any], str]:
    """(frozen model in eval mode, training record, sha256 of the file) from a weights file."""
    if not path.is_file():
        raise TeacherError(f'learned teacher weights {path}: no such file')
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise TeacherError(f'learned teacher weights {path}: not a readable weights file '
                           f'({type(err).__name__})') from err
    if not isinstance(payload, dict) or payload.get('format') != WEIGHTS_FORMAT:
        raise TeacherError(f'learned teacher weights {path}: expected format {WEIGHTS_FORMAT}')
    arch = dict(payload['architecture'])
    arch['widths'] = tuple(arch['widths'])
    model = PatchEncoder(PatchEncoderConfig(**arch))
    model.load_state_dict(payload['state_dict'])
    model.to(device).eval().requires_grad_(False)
    return model, dict(payload.get('training') or {}), digest


class LearnedTeacher(Teacher):
    """The learned teacher (see the module docstring). Needs only RGB images."""

    def __init__(self, config: LearnedTeacherConfig | None = None,
                 encoder: SentenceEncoder | None = None) -> None:
        self.config = config or LearnedTeacherConfig()
        path = Path(self.config.weights) if self.config.weights else default_weights_path()
        self._model, self.training_record, digest = load_weights(path, self.config.device)
        self.encoder = encoder or SentenceEncoder(self.config.device)
        self.feature_dim = self._model.config.out_dim
        if self.feature_dim != MINILM_DIM:
            raise TeacherError(f'{path}: the network gives {self.feature_dim}-d features, the '
                               f'text side {MINILM_DIM}-d')
        identity = {k: v for k, v in config_to_dict(self.config).items() if k != 'weights'}
        self.teacher_id = make_teacher_id('learned', identity, self.encoder.version, digest)
        self.weights_path = path

    def text_features(self, vocabulary: Vocabulary) -> NDArray[np.float32]:
        """(C, 384) float32: per entry, the normalised mean MiniLM embedding of its prompts
        inserted into every template."""
        return np.stack([self._embed(prompts) for prompts in vocabulary.prompts])

    def _embed(self, prompts: Sequence[str]) -> NDArray[np.float32]:
        return self.encoder.prompt_ensemble(prompts, self.config.prompt_templates)

    def _check_frozen(self) -> None:
        check_frozen(self._model, self.teacher_id)

    def image_features(self, images: Sequence[TeacherImage]) -> list[FeatureGrid]:
        """One (ceil(H/16), ceil(W/16), 384) float32 grid per image, from RGB alone."""
        self._check_images(images)
        self._check_frozen()
        out: list[FeatureGrid] = []
        with torch.inference_mode():
            for image in images:  # one at a time: cameras may differ in size
                # A copy: the image may be a read-only view of a bag message.
                rgb = torch.from_numpy(np.array(image.rgb, copy=True)).to(self.config.device)
                grid = self._model(rgb.permute(2, 0, 1)[None].float())[0]
                features = grid.permute(1, 2, 0).cpu().numpy().astype(np.float32)
                expected = grid_shape(image.size_px, self._model.config.patch_size_px)
                if features.shape[:2] != expected:  # cannot happen with stride-2 stages
                    raise TeacherError(f'grid {features.shape[:2]} for an image of '
                                       f'{image.size_px}, expected {expected}')
                out.append(FeatureGrid(features=normalize_rows(features),
                                       image_size_px=image.size_px))
        return out


def parameter_count(model: nn.Module) -> int:
    return int(sum(math.prod(p.shape) for p in model.parameters()))
