"""Labelling inference of a distilled student: the best vocabulary entry of every point, fast.

:func:`best_entries` is what the Labeler (and through it the node and ``relkd-label``) runs per
scan. It gives what ``scan_features`` followed by a cosine match gives, computed per voxel
rather than per point: the points of a voxel share its features, so the match runs on V voxel
rows and only the winning entry and its score are copied to the N points (N is 2–5× V on lidar
scans). The teacher-wide head output (384–768 columns) is not even made unless features are
asked for: with the head ``h = W v + b`` and unit text rows ``e``, the cosine is
``(e·W v + e·b) / |h|``, where ``e·W`` is a (C, out_dim) matrix made once per call and
``|h|² = vᵀ(WᵀW)v + 2 (Wᵀb)·v + b·b`` needs only the (out_dim, out_dim) Gram matrix, so the
per-voxel work is out_dim × (C + out_dim) instead of out_dim × teacher_dim (+ a normalisation
and a match at teacher width). The backbone's ``final`` 1×1 layer ``y = P u + f`` and its output
normalisation ``y / |y|`` fold in the same way, down to the last stage's width C_last: ``|y|²``
and ``|W y|²`` are quadratic forms in ``u`` and ``e·W y`` is linear in it, so one (C_last,
C + 2 C_last + 1) product per voxel gives them all (the small matrices are made in float64).
Same values up to float rounding.

Precision: ``float32`` (default) or ``bfloat16``. In bfloat16 the student runs on a bfloat16
copy of its weights (made once per model and cached) with bfloat16 voxel features, on the
backend's PyTorch reference path (the compiled kernels are float32); the match and the scores
are float32. Whether it is faster depends on the CPU: without native bfloat16 instructions
(AVX2-only x86) it is slower than float32. The labels agree with float32 on at least 99.5 %
of the points of the tested scans (test/models/test_inference.py).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import weakref
from typing import Final

import torch
from torch import nn

from relkd_core.errors import ConfigError
from relkd_core.models.batch import voxelize_batch
from relkd_core.models.distilled import DistilledStudent
from relkd_core.models.sparse import native_fast
from relkd_core.precision import PRECISIONS, Precision

__all__ = ["BestEntries", "best_entries", "check_precision",
           "model_for_precision"]

_DTYPES: Final = {"float32": torch.float32, "bfloat16": torch.bfloat16}

_copies: weakref.WeakKeyDictionary[DistilledStudent, DistilledStudent] = (
    weakref.WeakKeyDictionary())
_copies_lock = threading.Lock()
_folds: weakref.WeakKeyDictionary[DistilledStudent, tuple[
    tuple[torch.Tensor, ...], tuple[tuple[int, int], ...], native_fast.HeadTerms]] = (
    weakref.WeakKeyDictionary())


@dataclasses.dataclass(frozen=True)
class BestEntries:
    """Per point of one scan: ``index`` (N,) int64 best entry, ``score`` (N,) float32 cosine
    similarity to it, ``features`` (N, D) float32 unit teacher-space rows (None unless asked)."""

    index: torch.Tensor
    score: torch.Tensor
    features: torch.Tensor | None


def check_precision(precision: str) -> Precision:
    """``precision`` when it is one of :data:`PRECISIONS`; ConfigError otherwise."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, got "
                          f"{precision!r}")
    return precision  # type: ignore[return-value]


def model_for_precision(model: DistilledStudent, precision: str) -> DistilledStudent:
    """``model`` itself for float32; for bfloat16 an eval-mode bfloat16 copy, made on first
    use and reused while ``model`` lives (later changes to ``model``'s weights are not seen)."""
    dtype = _DTYPES[check_precision(precision)]
    if dtype == torch.float32:
        return model
    with _copies_lock:
        cached = _copies.get(model)
        if cached is None:
            cached = copy.deepcopy(model).to(dtype).eval()
            _copies[model] = cached
    return cached


@torch.no_grad()
def best_entries(model: DistilledStudent, points: torch.Tensor, embeddings: torch.Tensor, *,
                 precision: str = "float32", with_features: bool = False) -> BestEntries:
    """Best of the (C, D) unit ``embeddings`` for every point of one (N, 4) float32 scan.

    ``model`` (MinkUNet backbone + linear head) should be in eval mode; the result is on
    ``embeddings``' device. See the module doc for ``precision``.
    """
    runner = model_for_precision(model, precision)
    backbone, head = runner.backbone, runner.head
    device = embeddings.device
    batch = voxelize_batch([points], backbone.config, device=device)
    dtype = head.weight.dtype
    if batch.features.dtype != dtype:
        batch = dataclasses.replace(batch, features=batch.features.to(dtype))
    rows = batch.point_to_voxel
    if with_features:
        text = embeddings.float()
        weight, bias = head.weight.float(), head.bias.float()
        backbone_out = backbone.forward_voxels(batch).float()
        voxels = nn.functional.normalize(nn.functional.linear(backbone_out, weight, bias), dim=1)
        score, index = (voxels @ text.T).max(dim=1)
        features: torch.Tensor | None = voxels.index_select(0, rows)
    else:
        hidden = backbone.forward_voxels(batch, project=False).float()
        head_terms = _folded_head(runner, embeddings)
        ops = native_fast.fast_ops() if (backbone.config.backend == "native"
                                         and hidden.device.type == "cpu") else None
        normalize = backbone.config.normalize_output
        if ops is not None:
            index, score = native_fast.best_match(ops, hidden, head_terms, normalize)
        else:
            score, index = _head_cosines(hidden, head_terms, normalize).max(dim=1)
        features = None
    return BestEntries(index.index_select(0, rows), score.index_select(0, rows), features)


def _folded_head(runner: DistilledStudent, embeddings: torch.Tensor) -> native_fast.HeadTerms:
    """``_fold_head`` of ``runner``'s final layer and head with ``embeddings``, cached per model
    while those tensors are the same objects, unchanged (version counters) and in place."""
    final, head = runner.backbone.final, runner.head
    assert final.bias is not None  # MinkUNet's final layer has one
    sources: tuple[torch.Tensor, ...] = (final.weight, final.bias, head.weight, head.bias,
                                         embeddings)
    key = tuple((t._version, t.data_ptr()) for t in sources)
    with _copies_lock:
        cached = _folds.get(runner)
    if cached is not None and cached[1] == key and all(
            a is b for a, b in zip(cached[0], sources, strict=True)):
        return cached[2]
    terms = _fold_head(final.weight[0].float(), final.bias.float(), head.weight.float(),
                       head.bias.float(), embeddings.float())
    with _copies_lock:
        _folds[runner] = (sources, key, terms)
    return terms


def _fold_head(project: torch.Tensor, shift: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor, text: torch.Tensor) -> native_fast.HeadTerms:
    """The labelling head folded down to the last stage's width (see the module doc): the
    backbone's ``final`` layer ``y = u @ project + shift``, the head ``h = W n + b`` and the
    unit ``text`` rows ``e``; made in float64, stored in float32."""
    p, f, w, b, e = (t.double() for t in (project, shift, weight, bias, text))
    gram = w.T @ w
    p_gram = p @ gram
    # Columns: e·W y (C), then the blocks whose row-wise dot with u gives |y|² and |W y|² (less
    # their constants), then y·(Wᵀ b).
    matrix = torch.cat([p @ (e @ w).T, p @ p.T, p_gram @ p.T, (p @ (w.T @ b)).unsqueeze(1)],
                       dim=1)
    offset = torch.cat([e @ (w @ f), 2.0 * (p @ f), 2.0 * (p_gram @ f), (f @ (w.T @ b)).view(1)])
    return native_fast.HeadTerms(
        matrix=matrix.to(project.dtype), offset=offset.to(project.dtype),
        text_bias=(e @ b).to(project.dtype), f_dot_f=float(f @ f),
        f_gram_f=float(f @ gram @ f), b_dot_b=float(b @ b))


def _head_cosines(hidden: torch.Tensor, terms: native_fast.HeadTerms, normalize: bool
                  ) -> torch.Tensor:
    """(V, C) cosines between the head outputs and the text rows from the (V, C_last) last
    stage output ``hidden`` (``y / |y|`` feeds the head when ``normalize``, else ``y``),
    without making ``y`` or the head outputs. The reference of ``native_fast.best_match``."""
    c_last, count = hidden.shape[1], terms.text_bias.shape[0]
    out = torch.addmm(terms.offset, hidden, terms.matrix)
    quadratic = out[:, count:count + 2 * c_last].view(-1, 2, c_last)
    forms = (quadratic * hidden.unsqueeze(1)).sum(dim=2)
    y_gram_y = forms[:, 1] + terms.f_gram_f
    y_dot_wb = out[:, -1]
    dots = out[:, :count]
    if normalize:
        # F.normalize divides by max(|y|, 1e-12).
        inverse = (forms[:, 0] + terms.f_dot_f).clamp_(min=0.0).sqrt_().clamp_(min=1e-12)
        inverse = inverse.reciprocal_()
        y_gram_y.mul_(inverse.square())
        y_dot_wb = y_dot_wb * inverse
        dots = dots * inverse.unsqueeze(1)
    squared = y_gram_y + 2.0 * y_dot_wb + terms.b_dot_b
    norms = squared.clamp_(min=0.0).sqrt_().clamp_(min=1e-12)
    return (dots + terms.text_bias).div_(norms.unsqueeze(1))
