"""Few-shot protocols: which scans are labelled, a linear probe on frozen features, fine-tuning.

Class indices: taxonomy label ``c`` (1..num_classes) is logit ``c - 1``; points whose ground
truth is 0 (ignore) never enter a loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from relkd_core.errors import ConfigError, DataError
from relkd_core.models.batch import voxelize_batch
from relkd_core.models.distilled import DistilledStudent
from relkd_core.taxonomy import NUM_CLASSES

__all__ = ['FewShotConfig', 'finetune', 'labelled_points', 'select_scans', 'train_linear_probe']


@dataclass(frozen=True, kw_only=True)
class FewShotConfig:
    """Optimisation of the few-shot protocols (the same for every run that is compared).

    Attributes:
        probe_epochs: passes of the linear probe over the labelled points (full-batch AdamW).
        probe_lr: its learning rate.
        finetune_steps: optimisation steps of fine-tuning (one labelled scan per step).
        finetune_lr: AdamW learning rate of fine-tuning (backbone and classifier).
        seed: seeds the scan selection, the classifier's initialisation and the step order.
    """

    probe_epochs: int = 200
    probe_lr: float = 0.01
    finetune_steps: int = 100
    finetune_lr: float = 0.001
    seed: int = 0


def select_scans(num_scans: int, fraction: float, seed: int) -> NDArray[np.int64]:
    """The labelled scans of a k% protocol: ``max(1, round(fraction · num_scans))`` scan
    indices drawn without replacement by a generator seeded with ``seed``, sorted.

    The same (num_scans, fraction, seed) always gives the same scans, so runs that are
    compared see the same labels.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f'label fraction must be in (0, 1], got {fraction} '
                          '(0.01 means 1% of the scans)')
    if num_scans < 1:
        raise DataError('no scans to select labelled scans from')
    count = min(num_scans, max(1, round(fraction * num_scans)))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_scans, size=count, replace=False)).astype(np.int64)


def labelled_points(features: Sequence[torch.Tensor], labels: Sequence[NDArray[np.integer]]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per-scan (N_i, F) features and (N_i,) labels, dropping ignore points:
    (M, F) float32 features and (M,) int64 class indices (label - 1)."""
    rows, targets = [], []
    for feats, labs in zip(features, labels, strict=True):
        target = torch.as_tensor(np.asarray(labs, dtype=np.int64)) - 1
        keep = target >= 0
        rows.append(feats[keep.to(feats.device)].float().cpu())
        targets.append(target[keep])
    if not rows or sum(len(t) for t in targets) == 0:
        raise DataError('the labelled scans hold no labelled point (all ignore)')
    return torch.cat(rows), torch.cat(targets)


def train_linear_probe(features: torch.Tensor, targets: torch.Tensor, config: FewShotConfig,
                       num_classes: int = NUM_CLASSES) -> nn.Linear:
    """A linear classifier (F → num_classes) fit on frozen (M, F) features and (M,) class
    indices with class-balanced cross-entropy (inverse square-root frequency weights, so rare
    classes seen in the few labelled scans are not drowned by road and buildings).

    Identical (feature, class) rows are fitted once with their multiplicity as a weight: the
    points of one voxel share its features, so a scan has a few times fewer distinct rows than
    points. Loss, standardisation and so the optimisation are those of the rows one by one."""
    generator = torch.Generator().manual_seed(config.seed)
    probe = nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        bound = 1.0 / math.sqrt(features.shape[1])
        probe.weight.uniform_(-bound, bound, generator=generator)
        probe.bias.zero_()
    rows, row_targets, counts = distinct_rows(features.float(), targets)
    total = counts.sum()
    mean = (counts[:, None] * rows).sum(dim=0) / total
    variance = (counts[:, None] * (rows - mean) ** 2).sum(dim=0) / (total - 1).clamp_min(1)
    std = variance.sqrt().clamp_min(1e-6)
    normalised = (rows - mean) / std
    # cross_entropy(weight=w) averages w[y_i] * loss_i over the points, divided by sum w[y_i].
    row_weights = class_weights(targets, num_classes)[row_targets] * counts
    row_weights = row_weights / row_weights.sum()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=config.probe_lr, weight_decay=1e-4)
    for _ in range(config.probe_epochs):
        optimizer.zero_grad(set_to_none=True)
        losses = nn.functional.cross_entropy(probe(normalised), row_targets, reduction='none')
        loss = (losses * row_weights).sum()
        loss.backward()
        optimizer.step()
    # Fold the standardisation into the layer: it then applies to raw features.
    with torch.no_grad():
        probe.weight.div_(std)
        probe.bias.sub_(probe.weight @ mean)
    return probe.eval()


def distinct_rows(features: torch.Tensor, targets: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct (feature row, target) pairs of (M, F) ``features`` and (M,) ``targets``:
    their rows, targets and float32 counts (in sorted order)."""
    keyed = torch.cat([targets.to(features.dtype)[:, None], features], dim=1)
    unique, counts = torch.unique(keyed, dim=0, return_counts=True)
    return unique[:, 1:].contiguous(), unique[:, 0].long(), counts.to(features.dtype)


def class_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse square-root class frequencies, normalised to mean 1 over present classes
    (absent classes get 0)."""
    counts = torch.bincount(targets, minlength=num_classes).double()
    weights = torch.where(counts > 0, counts.clamp_min(1).rsqrt(), torch.zeros_like(counts))
    present = counts > 0
    weights[present] /= weights[present].mean()
    return weights.float()


class _FineTuned(nn.Module):
    def __init__(self, student: DistilledStudent, num_classes: int) -> None:
        super().__init__()
        self.backbone = student.backbone
        self.classifier = nn.Linear(student.config.out_dim, num_classes)

    def forward(self, scans: list[torch.Tensor]) -> torch.Tensor:
        device = next(self.parameters()).device
        out: torch.Tensor = self.classifier(
            self.backbone(voxelize_batch(scans, self.backbone.config, device=device)))
        return out


def finetune(student: DistilledStudent, scans: Sequence[NDArray[np.float32]],
             labels: Sequence[NDArray[np.integer]], config: FewShotConfig, *,
             num_classes: int = NUM_CLASSES,
             on_step: Callable[[int, float], None] | None = None
             ) -> Callable[[NDArray[np.float32]], NDArray[np.uint16]]:
    """Fine-tune the student's backbone with a new linear classifier on the labelled scans.

    The student is changed in place (pass a copy to keep it). Returns a function from one
    (N, 4) scan to (N,) uint16 predicted taxonomy labels. ``on_step(step, loss)`` reports
    progress.
    """
    if not scans:
        raise DataError('fine-tuning needs at least one labelled scan')
    torch.manual_seed(config.seed)
    device = next(student.parameters()).device
    model = _FineTuned(student, num_classes).to(device).train()
    targets = [torch.as_tensor(np.asarray(lab, dtype=np.int64)) - 1 for lab in labels]
    weights = class_weights(torch.cat([t[t >= 0] for t in targets]), num_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.finetune_lr, weight_decay=1e-4)
    order = np.random.default_rng(config.seed).permutation(
        np.resize(np.arange(len(scans)), config.finetune_steps))
    for step, index in enumerate(order):
        optimizer.zero_grad(set_to_none=True)
        logits = model([torch.from_numpy(np.asarray(scans[index], dtype=np.float32))])
        loss = nn.functional.cross_entropy(logits, targets[index].to(device), weight=weights,
                                           ignore_index=-1)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step, float(loss.detach()))
    model.eval()

    @torch.no_grad()
    def predict(scan: NDArray[np.float32]) -> NDArray[np.uint16]:
        logits = model([torch.from_numpy(np.asarray(scan, dtype=np.float32))])
        return (logits.argmax(dim=1) + 1).cpu().numpy().astype(np.uint16)

    return predict
