"""The paper's comparison on the synthetic world: aggregation of runs and the claims checked.

A *run* is one student (one loss, one seed) with its evaluation figures, a flat dict::

    {'loss': 'relational', 'seed': 0, 'zero_shot': 31.2, 'teacher': 45.0,
     'probe_in': 40.1, 'probe_ood': 22.3, 'zero_shot_ood': 20.0, 'cka': 0.61, 'gap': 0.09}

(mIoU in percent; ``gap`` is mean |KKᵀ − QQᵀ| on the in-distribution validation scans.)
:func:`aggregate` gives the mean ± std table over seeds; :func:`correlations` the Pearson
correlation of the gap with each quality figure across every run; :func:`claims` states
whether our figures agree with the paper's three claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from relkd_core.eval.report import pearson

__all__ = ['COLUMNS', 'QUALITY', 'aggregate', 'claims', 'correlations', 'table_markdown']

# (key, header) of the table, in order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ('zero_shot', 'zero-shot mIoU'),
    ('teacher', '2D teacher mIoU (visible pts)'),
    ('probe_in', '1% linear probe'),
    ('probe_ood', '1% linear probe, other rig'),
    ('zero_shot_ood', 'zero-shot, other rig'),
    ('cka', 'CKA ↑'),
    ('gap', '|KKᵀ−QQᵀ| ↓'),
)
QUALITY = ('zero_shot', 'probe_in', 'probe_ood', 'zero_shot_ood')


def _stats(values: Sequence[float | None]) -> dict[str, float | int | None]:
    present = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not present:
        return {'mean': None, 'std': None, 'n': 0}
    # Sample standard deviation over seeds (0 for one seed).
    std = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
    return {'mean': float(np.mean(present)), 'std': std, 'n': len(present)}


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{loss: {column: {mean, std, n}}}`` over the runs (seeds) of each loss."""
    losses = sorted({str(r['loss']) for r in runs})
    return {loss: {key: _stats([r.get(key) for r in runs if r['loss'] == loss])
                   for key, _ in COLUMNS} for loss in losses}


def correlations(runs: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Pearson r of the gap with each quality figure, across all runs."""
    out: dict[str, float | None] = {}
    for key in QUALITY:
        pairs = [(r['gap'], r[key]) for r in runs
                 if r.get('gap') is not None and r.get(key) is not None]
        out[key] = pearson([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None
    return out


def _mean(table: dict[str, dict[str, dict[str, Any]]], loss: str, key: str) -> float | None:
    value = table.get(loss, {}).get(key, {}).get('mean')
    return None if value is None else float(value)


def claims(table: dict[str, dict[str, dict[str, Any]]], corr: dict[str, float | None]
           ) -> list[dict[str, Any]]:
    """Each of the paper's claims with our figures and whether they agree (None: not
    measured)."""

    def beats(key: str, other: str) -> dict[str, Any]:
        ours, theirs = _mean(table, 'relational', key), _mean(table, other, key)
        agree = None if ours is None or theirs is None else ours > theirs
        return {'ours': ours, 'baseline': theirs, 'agrees': agree}

    negative = [v for v in (corr.get('zero_shot'), corr.get('probe_in')) if v is not None]
    return [
        {'claim': 'relational beats contrastive in zero-shot mIoU',
         **beats('zero_shot', 'contrastive')},
        {'claim': 'relational beats similarity in 1% few-shot mIoU (in distribution)',
         **beats('probe_in', 'similarity')},
        {'claim': 'relational beats similarity in 1% few-shot mIoU (other rig)',
         **beats('probe_ood', 'similarity')},
        {'claim': 'the structural gap is negatively correlated with zero-shot and few-shot mIoU',
         'ours': {k: corr.get(k) for k in ('zero_shot', 'probe_in')}, 'baseline': None,
         'agrees': None if not negative else all(v < 0 for v in negative)},
    ]


def _cell(stats: dict[str, Any], digits: int) -> str:
    if stats['mean'] is None:
        return 'n/a'
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def table_markdown(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The comparison as a Markdown table (mean ± std over seeds)."""
    header = ['loss', 'seeds'] + [name for _, name in COLUMNS]
    lines = ['| ' + ' | '.join(header) + ' |', '|---|---:|' + '---:|' * len(COLUMNS)]
    for loss, row in table.items():
        seeds = max(int(s['n']) for s in row.values())
        cells = [_cell(row[key], 3 if key in ('cka', 'gap') else 1) for key, _ in COLUMNS]
        lines.append(f'| {loss} | {seeds} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
