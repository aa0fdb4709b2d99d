"""From prepared frames to training batches: augmentation, pair sampling, collation.

Every random choice is drawn from a generator seeded by ``(seed, epoch, frame index)``, never
from a stream that runs across steps. A frame therefore looks the same whichever rank or
DataLoader worker loads it, and a resumed run sees exactly the batches the interrupted run
would have seen.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from relkd_core.data.prepared import PreparedDataset, PreparedFrame
from relkd_core.errors import DataError
from relkd_core.train.augment import augment_scan
from relkd_core.train.config import AugmentConfig

__all__ = ['DistillBatch', 'DistillFrames', 'collate']

# Salt that keeps the augmentation stream apart from PreparedDataset's pair subsampling, which
# draws from (seed, epoch, index) too.
_AUGMENT_STREAM = 1


@dataclasses.dataclass(frozen=True)
class DistillSample:
    """One augmented frame: points and its pairs (features already sampled)."""

    index: int
    points: torch.Tensor          # (N, 4) float32
    pair_point: torch.Tensor      # (M,) int64 row in points
    pair_features: torch.Tensor   # (M, D) float32
    pair_segment: torch.Tensor | None  # (M,) int64 superpixel id within the frame
    pair_label: torch.Tensor | None    # (M,) int64 ground-truth label of the pair's point


@dataclasses.dataclass(frozen=True)
class DistillBatch:
    """B scans and their pairs, pair rows pointing into the concatenated points.

    Attributes:
        scans: B tensors (N_i, 4) float32, the student's input.
        pair_points: (M,) int64 rows of the concatenated points (scan after scan).
        pair_features: (M, D) float32 teacher features of the paired pixels.
        pair_segments: (M,) int64 superpixel ids unique over the batch, or None.
        pair_labels: (M,) int64 ground-truth point labels (0 = unlabelled), or None.
        indices: dataset index of each scan.
    """

    scans: list[torch.Tensor]
    pair_points: torch.Tensor
    pair_features: torch.Tensor
    pair_segments: torch.Tensor | None
    pair_labels: torch.Tensor | None
    indices: list[int]

    @property
    def num_pairs(self) -> int:
        return int(self.pair_points.shape[0])


class DistillFrames(Dataset[DistillSample]):
    """A :class:`PreparedDataset` seen as augmented training samples.

    ``pairs_per_batch`` pairs are spread evenly over the ``batch_size`` scans of a step: each
    frame keeps ``ceil(pairs_per_batch / batch_size)`` of its pairs, drawn by the dataset.
    """

    def __init__(self, root: str, *, augment: AugmentConfig, pairs_per_batch: int,
                 batch_size: int, seed: int, superpixels: bool) -> None:
        self.frames = PreparedDataset(root, features=True,
                                      pairs_per_frame=math.ceil(pairs_per_batch / batch_size),
                                      seed=seed)
        if self.frames.teacher_id is None:
            raise DataError(f'{root} was prepared without a teacher (--teacher none): there are '
                            'no pixel features to distil; prepare it with --teacher')
        if superpixels and self.frames.superpixels is None:
            raise DataError(f'{root} has no superpixels, but the loss pools them: prepare it '
                            'with --superpixels N (SLidR: 150) or set loss.superpixels: false')
        self.augment = augment
        self.seed = seed
        self.superpixels = superpixels
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.frames.set_epoch(epoch)

    def __getitem__(self, index: int) -> DistillSample:
        frame: PreparedFrame = self.frames[index]
        rng = np.random.default_rng((self.seed, self.epoch, index, _AUGMENT_STREAM))
        points, pair_point, kept = augment_scan(frame.points, frame.pair_point, self.augment,
                                                rng)
        assert frame.pair_features is not None  # the constructor checked for a teacher
        segment = None
        if self.superpixels and frame.pair_superpixel is not None:
            segment = torch.from_numpy(frame.pair_superpixel[kept].astype(np.int64))
        label = None
        if frame.labels is not None:
            label = torch.from_numpy(frame.labels[frame.pair_point[kept]].astype(np.int64))
        return DistillSample(
            index=index,
            points=torch.from_numpy(points),
            pair_point=torch.from_numpy(pair_point),
            pair_features=torch.from_numpy(np.ascontiguousarray(frame.pair_features[kept])),
            pair_segment=segment,
            pair_label=label,
        )


def collate(samples: Sequence[DistillSample]) -> DistillBatch:
    """Concatenate samples into one batch, offsetting pair rows and superpixel ids."""
    offsets = np.cumsum([0] + [len(s.points) for s in samples])
    pair_points = [s.pair_point + int(o) for s, o in zip(samples, offsets, strict=False)]
    segments = None
    if samples and all(s.pair_segment is not None for s in samples):
        base, parts = 0, []
        for s in samples:
            assert s.pair_segment is not None
            parts.append(s.pair_segment + base)
            base += int(s.pair_segment.max()) + 1 if len(s.pair_segment) else 0
        segments = torch.cat(parts)
    labels = None
    if samples and all(s.pair_label is not None for s in samples):
        labels = torch.cat([s.pair_label for s in samples if s.pair_label is not None])
    dim = samples[0].pair_features.shape[1] if samples else 0
    return DistillBatch(
        scans=[s.points for s in samples],
        pair_points=torch.cat(pair_points) if samples else torch.zeros(0, dtype=torch.int64),
        pair_features=(torch.cat([s.pair_features for s in samples]) if samples
                       else torch.zeros((0, dim))),
        pair_segments=segments,
        pair_labels=labels,
        indices=[s.index for s in samples],
    )
