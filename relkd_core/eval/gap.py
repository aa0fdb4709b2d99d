"""The structural gap between the student's and the teacher's similarity structure.

Two measures over the same M point-pixel pairs (row i of K is a point's student feature, row i
of Q the teacher's feature of the pixel it projects to):

- linear CKA (Kornblith et al. 2019): ``||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F)`` on
  column-centred X, Y. 1 for identical representations; invariant to rotations and isotropic
  scaling of either side; the two sides may have different widths.
- relational gap: ``mean_{i≠j} |K Kᵀ − Q Qᵀ|_ij`` on L2-normalised rows, the intra-modal term
  of the relational loss: 0 when the student reproduces the teacher's pairwise cosines.

Sampling: both are O(M²) (the gap) or O(M·D²) (CKA), so :func:`structural_gap` draws at most
``max_pairs`` pairs uniformly without replacement from all the pairs it is given, with a seeded
generator; evaluation gives it one pair per camera-visible point (the first camera that sees
the point), pooled over every evaluated scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from relkd_core.errors import DataError

__all__ = ['GapResult', 'linear_cka', 'relational_gap', 'sample_rows', 'structural_gap']


@dataclass(frozen=True)
class GapResult:
    """``cka`` in [0, 1] (higher: closer), ``relational_gap`` in [0, 2] (lower: closer), over
    ``num_pairs`` sampled pairs."""

    cka: float
    relational_gap: float
    num_pairs: int


def _as_matrix(name: str, x: NDArray[np.floating] | torch.Tensor) -> torch.Tensor:
    matrix = torch.as_tensor(x, dtype=torch.float64)
    if matrix.ndim != 2:
        raise DataError(f'{name}: expected an (M, D) matrix, got shape {tuple(matrix.shape)}')
    if not torch.isfinite(matrix).all():
        raise DataError(f'{name}: holds NaN or infinite values')
    return matrix


def _check_rows(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[0] != y.shape[0]:
        raise DataError(f'the two sides need one row per pair, got {x.shape[0]} and {y.shape[0]}')
    if x.shape[0] < 2:
        raise DataError(f'the structural gap needs at least 2 pairs, got {x.shape[0]}')


def linear_cka(x: NDArray[np.floating] | torch.Tensor, y: NDArray[np.floating] | torch.Tensor
               ) -> float:
    """Linear CKA between (M, D1) and (M, D2) representations of the same M samples."""
    a, b = _as_matrix('x', x), _as_matrix('y', y)
    _check_rows(a, b)
    a = a - a.mean(dim=0)
    b = b - b.mean(dim=0)
    cross = torch.linalg.matrix_norm(b.T @ a) ** 2
    norms = torch.linalg.matrix_norm(a.T @ a) * torch.linalg.matrix_norm(b.T @ b)
    if norms == 0:
        raise DataError('linear_cka: a side is constant over the samples (zero variance)')
    return float(cross / norms)


#: Rows per block of :func:`relational_gap`.
_GAP_BLOCK = 512


def relational_gap(k: NDArray[np.floating] | torch.Tensor, q: NDArray[np.floating] | torch.Tensor
                   ) -> float:
    """``mean_{i≠j} |K Kᵀ − Q Qᵀ|_ij`` of (M, D1) and (M, D2) rows, each L2-normalised first."""
    a, b = _as_matrix('k', k), _as_matrix('q', q)
    _check_rows(a, b)
    a = torch.nn.functional.normalize(a, dim=1)
    b = torch.nn.functional.normalize(b, dim=1)
    # The difference is symmetric: the pairs j > i, in blocks of rows, count for both halves
    # (half the products of the whole matrix, and a block's memory instead of three M × M).
    m = a.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, m, _GAP_BLOCK):
        stop = min(start + _GAP_BLOCK, m)
        diff = (a[start:stop] @ a[start:].T).sub_(b[start:stop] @ b[start:].T).abs_()
        total += torch.triu(diff[:, :stop - start], diagonal=1).sum() + diff[:, stop - start:].sum()
    return float(2.0 * total / (m * (m - 1)))


def sample_rows(num_rows: int, max_rows: int, seed: int) -> NDArray[np.int64]:
    """Sorted indices of ``min(num_rows, max_rows)`` rows drawn without replacement."""
    if max_rows < 2:
        raise DataError(f'max_rows must be at least 2, got {max_rows}')
    if num_rows <= max_rows:
        return np.arange(num_rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_rows, size=max_rows, replace=False)).astype(np.int64)


def structural_gap(student: NDArray[np.floating] | torch.Tensor,
                   teacher: NDArray[np.floating] | torch.Tensor, *,
                   max_pairs: int = 4096, seed: int = 0) -> GapResult:
    """CKA and relational gap on at most ``max_pairs`` of the given pairs (see module doc)."""
    k, q = _as_matrix('student', student), _as_matrix('teacher', teacher)
    _check_rows(k, q)
    rows = torch.from_numpy(sample_rows(k.shape[0], max_pairs, seed))
    k, q = k[rows], q[rows]
    return GapResult(cka=linear_cka(k, q), relational_gap=relational_gap(k, q),
                     num_pairs=int(rows.shape[0]))
