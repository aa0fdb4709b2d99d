"""MaskCLIP dense features from an open_clip ViT: the real 2D teacher.

MaskCLIP (Zhou et al., ECCV 2022) observes that CLIP's patch tokens carry local semantics only
along the *value* path of the last attention block: the query-key attention mixes every token
with the global context, so the last block's output (and the pooled CLS token) is not dense.
Per patch token ``x`` after the second-to-last block::

    feature = ln_post(out_proj(W_v · ln_1(x) + b_v)) @ proj

i.e. the last block with its attention replaced by identity (each token attends only to itself),
without the residual and MLP branches, then the image head. The result lives in the joint space
of ``encode_text``. Positional embeddings are resized bicubically, so any image size works; the
patch grid is ``round(H · image_scale / patch)`` × ``round(W · image_scale / patch)``.

This module is the only importer of open_clip (and of huggingface_hub, for cache look-ups).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from relkd_core.config import bounded, config_to_dict
from relkd_core.errors import TeacherError
from relkd_core.teachers.base import (
    FeatureGrid,
    Teacher,
    TeacherImage,
    check_frozen,
    make_teacher_id,
)
from relkd_core.teachers.torchvision_compat import ensure_torchvision_importable
from relkd_core.teachers.vocabulary import Vocabulary

__all__ = ['DEFAULT_TEMPLATES', 'OpenClipTeacher', 'OpenClipTeacherConfig', 'maskclip_features']

_LOG = logging.getLogger(__name__)

#: A short ensemble in the style of CLIP's ImageNet templates, worded for street scenes.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    'a photo of a {}.',
    'a photo of the {}.',
    'a blurry photo of a {}.',
    'a cropped photo of a {}.',
    'a photo of a {} in the street.',
    'there is a {} in the scene.',
)
# The names open_clip gives weights on the Hugging Face hub, safetensors first.
_HF_WEIGHT_FILES = ('open_clip_model.safetensors', 'open_clip_pytorch_model.bin')


@dataclass(frozen=True, kw_only=True)
class OpenClipTeacherConfig:
    """Which open_clip model, which weights, and how images and prompts are prepared.

    Weights: ``checkpoint_path`` (a local file) wins; else the ``pretrained`` tag is looked up
    in the local caches (Hugging Face hub cache or ``cache_dir``), and fetched only when
    ``allow_download`` is true; ``pretrained: null`` without a checkpoint gives a random
    initialisation seeded by ``init_seed`` (tests and benchmarks only).
    """

    model_name: str = 'ViT-B-16'
    pretrained: str | None = 'openai'
    checkpoint_path: Path | None = None
    cache_dir: Path | None = None
    allow_download: bool = False
    #: OpenAI's CLIP weights use QuickGELU; a ``pretrained`` tag sets it by itself, a
    #: ``checkpoint_path`` of OpenAI weights needs it set here.
    force_quick_gelu: bool = False
    #: Resize factor before the ViT: 2.0 doubles the feature grid (and the cost, four times).
    image_scale: float = bounded(1.0, min=0.1, max=8.0)
    prompt_templates: tuple[str, ...] = DEFAULT_TEMPLATES
    batch_size: int = bounded(8, min=1, max=1024)
    device: str = 'cpu'
    init_seed: int = bounded(0, min=0)

    def validate(self) -> None:
        if not self.prompt_templates:
            raise ValueError('prompt_templates: give at least one template, e.g. ["a {}."]')
        for template in self.prompt_templates:
            if template.count('{}') != 1:
                raise ValueError(f"prompt_templates: {template!r} must contain '{{}}' once")


def _import_open_clip() -> Any:
    ensure_torchvision_importable()  # open_clip imports torchvision at import time
    try:
        import open_clip
    except ImportError as err:
        raise TeacherError(
            f'the openclip teacher needs open_clip: `pip install open_clip_torch '
            f'torch=={torch.__version__.split("+")[0]}` (or the [openclip] extra); {err}'
        ) from err
    return open_clip


def _resize_positional_embedding(positional: torch.Tensor, grid: tuple[int, int],
                                 new_grid: tuple[int, int]) -> torch.Tensor:
    """(1 + Gh·Gw, C) CLS + patch position embeddings resized bicubically to ``new_grid``."""
    if tuple(grid) == tuple(new_grid):
        return positional
    cls_position, patch_positions = positional[:1], positional[1:]
    channels = positional.shape[1]
    image = patch_positions.reshape(1, grid[0], grid[1], channels).permute(0, 3, 1, 2)
    image = functional.interpolate(image.float(), size=new_grid, mode='bicubic',
                                   align_corners=False)
    resized = image.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], channels)
    return torch.cat([cls_position, resized.to(positional.dtype)], dim=0)


def maskclip_features(visual: Any, pixels: torch.Tensor) -> torch.Tensor:
    """MaskCLIP dense features of normalised images: (B, 3, H, W) -> (B, H/p, W/p, D), not
    L2-normalised, in the space of ``encode_text`` (see the module docstring).

    ``visual`` is an open_clip ``VisionTransformer`` whose blocks use ``nn.MultiheadAttention``
    (every CLIP ViT of open_clip); H and W must be multiples of the patch size.
    """
    blocks = visual.transformer.resblocks
    last = blocks[-1]
    x = visual.conv1(pixels)  # (B, width, Gh, Gw)
    batch, _, rows, cols = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls_token = visual.class_embedding.to(x.dtype).expand(batch, 1, -1)
    x = torch.cat([cls_token, x], dim=1)
    x = x + _resize_positional_embedding(visual.positional_embedding, visual.grid_size,
                                         (rows, cols)).to(x.dtype)
    x = visual.ln_pre(x)  # patch dropout is the identity in eval mode
    batch_first = getattr(visual.transformer, 'batch_first', True)
    if not batch_first:
        x = x.transpose(0, 1)
    for block in blocks[:-1]:
        x = block(x)
    if not batch_first:
        x = x.transpose(0, 1)
    # The value path of the last block: attention replaced by identity, no residual, no MLP.
    width = x.shape[-1]
    attention = last.attn
    values = functional.linear(last.ln_1(x), attention.in_proj_weight[2 * width:],
                      attention.in_proj_bias[2 * width:])
    tokens = attention.out_proj(values)[:, 1:]  # drop CLS
    features = visual.ln_post(tokens) @ visual.proj
    return features.reshape(batch, rows, cols, -1)


class OpenClipTeacher(Teacher):
    """MaskCLIP-style dense features and prompt-ensemble text embeddings of an open_clip ViT."""

    def __init__(self, config: OpenClipTeacherConfig | None = None) -> None:
        self.config = config or OpenClipTeacherConfig()
        self._open_clip = _import_open_clip()
        weights, weights_id, quick_gelu = self._resolve_weights()
        try:
            device = torch.device(self.config.device)
        except RuntimeError as err:
            raise TeacherError(f'device: {self.config.device!r} is not a torch device') from err
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.init_seed)  # used only by a random initialisation
            try:
                model = self._open_clip.create_model(
                    self.config.model_name, pretrained=weights, force_quick_gelu=quick_gelu,
                    device=device, cache_dir=_optional_str(self.config.cache_dir))
            except (RuntimeError, ValueError, KeyError, OSError) as err:
                raise TeacherError(f'open_clip could not build {self.config.model_name!r} with '
                                   f'weights {weights or "(random init)"}: {err}') from err
        self._model = model.eval().requires_grad_(False)
        self._check_architecture()
        self._tokenizer = self._open_clip.get_tokenizer(self.config.model_name)
        self._device = device
        visual = self._model.visual
        self.patch_size_px = int(visual.patch_size[0])
        self.feature_dim = int(visual.proj.shape[1])
        preprocess = getattr(visual, 'preprocess_cfg', {}) or {}
        self._mean = torch.tensor(preprocess.get('mean', self._open_clip.OPENAI_DATASET_MEAN),
                                  device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(preprocess.get('std', self._open_clip.OPENAI_DATASET_STD),
                                 device=device).view(1, 3, 1, 1)
        version = importlib.metadata.version('open_clip_torch')
        self.teacher_id = make_teacher_id('openclip', config_to_dict(self.config), weights_id,
                                          f'open_clip_torch=={version}')
        self._text_cache: dict[tuple[str, ...], NDArray[np.float32]] = {}

    # --- weights --------------------------------------------------------------------------------

    def _resolve_weights(self) -> tuple[str | None, str, bool]:
        """(file for create_model or None, id of the weights for teacher_id, quick_gelu)."""
        config, open_clip = self.config, self._open_clip
        if config.model_name not in open_clip.list_models():
            close = difflib.get_close_matches(config.model_name, open_clip.list_models(), n=3)
            raise TeacherError(f'model_name: unknown open_clip model {config.model_name!r}; '
                               f'close names: {close or "none"} (see open_clip.list_models())')
        if config.checkpoint_path is not None:
            path = Path(config.checkpoint_path).expanduser()
            if not path.is_file():
                raise TeacherError(f'checkpoint_path: {path} not found; give the path of an '
                                   f'open_clip checkpoint file of {config.model_name}')
            return str(path), f'file-sha256:{_sha256(path)}', config.force_quick_gelu
        if config.pretrained is None:
            return None, f'random-init:{config.init_seed}', config.force_quick_gelu
        tags = open_clip.list_pretrained_tags_by_model(config.model_name)
        if config.pretrained not in tags:
            raise TeacherError(f'pretrained: {config.model_name} has no weights tagged '
                               f'{config.pretrained!r}; known tags: {tags or "none"}')
        pretrained_cfg = open_clip.get_pretrained_cfg(config.model_name, config.pretrained)
        quick_gelu = bool(pretrained_cfg.get('quick_gelu', False)) or config.force_quick_gelu
        weights_id = f'{config.model_name}:{config.pretrained}'
        cached = self._find_cached(pretrained_cfg)
        if cached is not None:
            return cached, weights_id, quick_gelu
        if not config.allow_download:
            raise TeacherError(self._missing_weights_message(pretrained_cfg))
        try:
            return (open_clip.download_pretrained(pretrained_cfg,
                                                  cache_dir=_optional_str(config.cache_dir)),
                    weights_id, quick_gelu)
        except Exception as err:  # network errors come in many types; the message says it all
            raise TeacherError(f'{self._missing_weights_message(pretrained_cfg)} (download '
                               f'failed: {err})') from err

    def _find_cached(self, pretrained_cfg: dict[str, Any]) -> str | None:
        """A weights file already on this machine (no network), or None."""
        cache_dir = _optional_str(self.config.cache_dir)
        repo_id, filename = _hf_location(pretrained_cfg)
        if repo_id:
            from huggingface_hub import try_to_load_from_cache

            for name in (filename,) if filename else _HF_WEIGHT_FILES:
                found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
        url = pretrained_cfg.get('url', '')
        if url:
            path = Path(cache_dir or Path.home() / '.cache' / 'clip') / os.path.basename(url)
            if path.is_file():
                return str(path)
        return None

    def _missing_weights_message(self, pretrained_cfg: dict[str, Any]) -> str:
        config = self.config
        repo_id, filename = _hf_location(pretrained_cfg)
        sources = []
        if repo_id:
            names = (filename,) if filename else _HF_WEIGHT_FILES
            sources += [f'https://huggingface.co/{repo_id}/resolve/main/{n}' for n in names]
        if pretrained_cfg.get('url'):
            sources.append(pretrained_cfg['url'])
        return (
            f'weights of open_clip {config.model_name} (pretrained {config.pretrained!r}) are not '
            f'on this machine. Provide the file: download one of {sources} and set '
            f'checkpoint_path: /path/to/{os.path.basename(sources[0]) if sources else "weights"}'
            f'{" and force_quick_gelu: true" if pretrained_cfg.get("quick_gelu") else ""} in '
            'the teacher config, or set allow_download: true on a machine with network'
        )

    def _check_architecture(self) -> None:
        visual = getattr(self._model, 'visual', None)
        blocks = getattr(getattr(visual, 'transformer', None), 'resblocks', None)
        attention = getattr(blocks[-1], 'attn', None) if blocks else None
        if (
            not isinstance(attention, torch.nn.MultiheadAttention)
            or not attention._qkv_same_embed_dim
            or getattr(visual, 'attn_pool', None) is not None
            or getattr(visual, 'proj', None) is None
        ):
            raise TeacherError(
                f'{self.config.model_name}: MaskCLIP dense features need an open_clip '
                'VisionTransformer with standard attention blocks, a projection and no '
                'attention pooling (e.g. ViT-B-16, ViT-L-14); this model is not one'
            )

    def _check_frozen(self) -> None:
        check_frozen(self._model, self.teacher_id)

    # --- features -------------------------------------------------------------------------------

    def image_features(self, images: Sequence[TeacherImage]) -> list[FeatureGrid]:
        """(round(H·s/p), round(W·s/p), D) float32 L2-normalised grids, ``s = image_scale``."""
        self._check_images(images)
        self._check_frozen()
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            by_size[image.size_px].append(i)
        grids: list[FeatureGrid | None] = [None] * len(images)
        step = self.config.batch_size
        for size, indices in by_size.items():
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                features = self._dense([images[i].rgb for i in chunk])
                for i, grid in zip(chunk, features, strict=True):
                    grids[i] = FeatureGrid(features=grid, image_size_px=size)
        return [grid for grid in grids if grid is not None]

    def _dense(self, rgbs: Sequence[NDArray[np.uint8]]) -> list[NDArray[np.float32]]:
        height, width = rgbs[0].shape[:2]
        patch, scale = self.patch_size_px, self.config.image_scale
        rows, cols = max(1, round(height * scale / patch)), max(1, round(width * scale / patch))
        with torch.inference_mode():
            pixels = torch.from_numpy(np.stack(rgbs)).to(self._device)
            pixels = pixels.permute(0, 3, 1, 2).float() / 255.0
            if (rows * patch, cols * patch) != (height, width):
                pixels = functional.interpolate(
                    pixels, size=(rows * patch, cols * patch), mode='bicubic',
                    align_corners=False, antialias=True).clamp_(0.0, 1.0)
            pixels = (pixels - self._mean) / self._std
            features = maskclip_features(self._model.visual, pixels)
            features = functional.normalize(features.float(), dim=-1)
        return list(features.cpu().numpy())

    def text_features(self, vocabulary: Vocabulary) -> NDArray[np.float32]:
        """(C, D) float32: per entry, the normalised mean of the normalised ``encode_text`` of
        every prompt in every template (CLIP's prompt ensembling)."""
        self._check_frozen()
        rows = []
        for prompts in vocabulary.prompts:
            if prompts not in self._text_cache:
                texts = [t.format(p) for p in prompts for t in self.config.prompt_templates]
                with torch.inference_mode():
                    tokens = self._tokenizer(texts).to(self._device)
                    embedded = functional.normalize(self._model.encode_text(tokens).float(), dim=-1)
                    mean = functional.normalize(embedded.mean(dim=0), dim=0)
                self._text_cache[prompts] = mean.cpu().numpy()
            rows.append(self._text_cache[prompts])
        return np.stack(rows).astype(np.float32)


def _hf_location(pretrained_cfg: dict[str, Any]) -> tuple[str, str]:
    """('org/repo', filename) of a pretrained config's ``hf_hub`` entry; filename '' when the
    entry ends in '/' (open_clip's default file names), ('', '') when there is none."""
    hf_hub = pretrained_cfg.get('hf_hub', '')
    if not hf_hub:
        return '', ''
    if hf_hub.endswith('/'):
        return hf_hub.rstrip('/'), ''
    repo_id, filename = os.path.split(hf_hub)
    return repo_id, filename


def _optional_str(path: Path | None) -> str | None:
    return None if path is None else str(Path(path).expanduser())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open('rb') as stream:
        while chunk := stream.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()[:16]
