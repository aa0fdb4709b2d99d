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

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.eval.report import pearson

__all__ = ['COLUMNS', 'GAP_CLAIM', 'PAIRED_CLAIMS', 'QUALITY', 'aggregate', 'claims',
           'correlations', 'paired_difference', 'per_class_means', 'rank_correlations',
           'spearman', 'spearman_p_values', 'study_claims', 't_quantile', 'table_markdown',
           'write_study']

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


# --- the sensitivity study: paired differences over seeds, verdicts, rank correlations -------

#: Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: 1.96).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

#: The paper's claims about the losses: (claim, metric, loss expected higher, baseline).
PAIRED_CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    ('relational beats contrastive in zero-shot mIoU', 'zero_shot', 'relational',
     'contrastive'),
    ('relational beats similarity in 1% few-shot mIoU (in distribution)', 'probe_in',
     'relational', 'similarity'),
    ('relational beats similarity in 1% few-shot mIoU (other rig)', 'probe_ood', 'relational',
     'similarity'),
)
GAP_CLAIM = 'the structural gap is negatively correlated with zero-shot and few-shot mIoU'


def t_quantile(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f'degrees of freedom must be at least 1, got {df}')
    return _T975[df - 1] if df <= len(_T975) else 1.96


def paired_difference(runs: Sequence[dict[str, Any]], metric: str, loss: str, baseline: str
                      ) -> dict[str, Any]:
    """Mean over seeds of ``run[metric]`` of ``loss`` minus that of ``baseline`` (same seed),
    with its 95% t-interval over seeds and the verdict: 'holds' (interval above 0), 'does not
    hold' (below 0), 'undecided' (contains 0, or fewer than 2 seeds)."""
    by_seed: dict[str, dict[int, float]] = {loss: {}, baseline: {}}
    for run in runs:
        value = run.get(metric)
        if run.get('loss') in by_seed and value is not None:
            by_seed[str(run['loss'])][int(run['seed'])] = float(value)
    seeds = sorted(set(by_seed[loss]) & set(by_seed[baseline]))
    diffs = [by_seed[loss][s] - by_seed[baseline][s] for s in seeds]
    out: dict[str, Any] = {'seeds': seeds, 'differences': [round(d, 2) for d in diffs],
                           'mean': None, 'low': None, 'high': None, 'verdict': 'undecided'}
    if not diffs:
        return out
    mean = float(np.mean(diffs))
    out['mean'] = round(mean, 2)
    if len(diffs) < 2:
        return out
    half = t_quantile(len(diffs) - 1) * float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs))
    low, high = mean - half, mean + half
    out.update(low=round(low, 2), high=round(high, 2),
               verdict='holds' if low > 0 else 'does not hold' if high < 0 else 'undecided')
    return out


def _ranks(values: Sequence[float]) -> NDArray[np.float64]:
    order = np.argsort(values, kind='stable')
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = np.asarray(values, dtype=np.float64)[order]
    i = 0
    while i < len(values):  # ties share their mean rank
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson r of the ranks, ties at mean rank); None for
    fewer than 3 pairs or a constant side."""
    if len(x) != len(y) or len(x) < 3:
        return None
    return pearson(list(_ranks(x)), list(_ranks(y)))


def spearman_p_values(x: Sequence[float], y: Sequence[float], *, samples: int = 20000,
                      seed: int = 0) -> tuple[float, float] | None:
    """One-sided permutation p-values of Spearman's rho: (P(rho_perm <= rho), P(rho_perm >=
    rho)) over permutations of ``y`` (all of them up to 8 pairs, else ``samples`` seeded
    draws). None where rho is undefined."""
    rho = spearman(x, y)
    if rho is None:
        return None
    rx, ry = _ranks(x), _ranks(y)
    n = len(rx)
    if n <= 8:
        perms = np.array(list(itertools.permutations(range(n))))
    else:
        rng = np.random.default_rng(seed)
        perms = np.array([rng.permutation(n) for _ in range(samples)])
    shuffled = ry[perms]  # (P, n)
    cx = rx - rx.mean()
    cy = shuffled - shuffled.mean(axis=1, keepdims=True)
    rhos = (cy @ cx) / (np.linalg.norm(cy, axis=1) * np.linalg.norm(cx))
    tolerance = 1e-12
    return (float(np.mean(rhos <= rho + tolerance)), float(np.mean(rhos >= rho - tolerance)))


def rank_correlations(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Spearman's rho of the gap with each quality figure over ``runs``, the number of runs and
    one-sided permutation p-values (``p_negative``: of a rho this low by chance,
    ``p_positive``: this high)."""
    out: dict[str, dict[str, Any]] = {}
    for key in QUALITY:
        pairs = [(float(r['gap']), float(r[key])) for r in runs
                 if r.get('gap') is not None and r.get(key) is not None]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        rho = spearman(xs, ys)
        p_values = spearman_p_values(xs, ys)
        out[key] = {'rho': None if rho is None else round(rho, 3), 'runs': len(pairs),
                    'p_negative': None if p_values is None else round(p_values[0], 4),
                    'p_positive': None if p_values is None else round(p_values[1], 4)}
    return out


def study_claims(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per claim: the paired difference, its interval and verdict (for the gap claim: the
    Spearman rho of the gap with zero-shot and probe mIoU, 'holds' when both are negative with
    a one-sided permutation p below 0.05, 'does not hold' when both are positive so, else
    'undecided')."""
    out = [{'claim': claim, 'metric': metric, 'loss': loss, 'baseline': baseline,
            **paired_difference(runs, metric, loss, baseline)}
           for claim, metric, loss, baseline in PAIRED_CLAIMS]
    rho = rank_correlations(runs)
    keys = ('zero_shot', 'probe_in')
    if any(rho[k]['rho'] is None for k in keys):
        verdict = 'undecided'
    elif all(rho[k]['p_negative'] < 0.05 for k in keys):
        verdict = 'holds'
    elif all(rho[k]['p_positive'] < 0.05 for k in keys):
        verdict = 'does not hold'
    else:
        verdict = 'undecided'
    out.append({'claim': GAP_CLAIM, 'metric': 'spearman', 'rho': {k: rho[k]['rho'] for k in keys},
                'p_negative': {k: rho[k]['p_negative'] for k in keys},
                'p_positive': {k: rho[k]['p_positive'] for k in keys}, 'verdict': verdict})
    return out


def per_class_means(runs: Sequence[dict[str, Any]], key: str = 'zero_shot'
                    ) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{loss: {class: {'iou': mean IoU over seeds, 'predicted': mean predicted points}}}``
    of one evaluation (``key``: zero_shot, probe_in, ...) for runs that stored per-class
    figures."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for loss in sorted({str(r['loss']) for r in runs}):
        stored = [r['per_class'][key] for r in runs if r['loss'] == loss
                  and (r.get('per_class') or {}).get(key, {}).get('per_class_iou')]
        if not stored:
            continue
        names = list(stored[0]['per_class_iou'])
        row: dict[str, dict[str, float | None]] = {}
        for name in names:
            ious = [s['per_class_iou'][name] for s in stored
                    if s['per_class_iou'].get(name) is not None]
            counts = [s['predicted_points'][name] for s in stored
                      if (s.get('predicted_points') or {}).get(name) is not None]
            row[name] = {'iou': None if not ious else round(float(np.mean(ious)), 1),
                         'predicted': None if not counts else round(float(np.mean(counts)))}
        out[loss] = row
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}'


def _interval(c: dict[str, Any]) -> str:
    if c.get('mean') is None:
        return 'n/a'
    if c.get('low') is None:
        return f"{c['mean']:+.1f} (1 seed)"
    return f"{c['mean']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}]"


def _curve_plot(curves: Sequence[dict[str, Any]], path: Path) -> str:
    from relkd_core.eval.report import _pyplot

    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], 'zero_shot', 'zero-shot mIoU (%)'),
                           (axes[1], 'probe_in', '1% linear probe mIoU (%)')):
        for loss in sorted({c['loss'] for c in curves}):
            points = sorted((c['step'], c[key]) for c in curves
                            if c['loss'] == loss and c.get(key) is not None)
            if points:
                ax.plot(*zip(*points, strict=True), marker='o', label=loss)
        ax.set_xscale('log', base=2)
        ax.set_xlabel('training steps (batch 2)')
        ax.set_ylabel(title)
        ax.legend()
    return _save_figure(figure, path)


def _save_figure(figure: Any, path: Path) -> str:
    from relkd_core.eval.report import _save

    return _save(figure, path)


def write_study(out: Path, runs: Sequence[dict[str, Any]], settings: dict[str, Any],
                curves: Sequence[dict[str, Any]], teacher_figures: dict[str, Any]) -> Path:
    """Write ``paper.json``, ``paper.md``, ``paper.html`` and the plots of the sensitivity
    study: per teacher the table, the paired differences with their intervals and verdicts,
    per-class IoU with predicted-class counts; the learning curves; Spearman correlations of
    the gap with each quality figure. Returns the path of ``paper.md``."""
    from relkd_core.atomic import write_text_atomic
    from relkd_core.eval.report import gap_scatter, write_html

    teachers = list(settings.get('teachers') or sorted({r['teacher_setup'] for r in runs}))
    per_teacher: dict[str, Any] = {}
    for teacher in teachers:
        mine = [r for r in runs if r.get('teacher_setup') == teacher]
        per_teacher[teacher] = {
            'snapshot_steps': sorted({int(r['step']) for r in mine if r.get('step')}),
            'table': aggregate(mine), 'claims': study_claims(mine),
            'spearman': rank_correlations(mine), 'gap_pearson': correlations(mine),
            'per_class_zero_shot': per_class_means(mine, 'zero_shot'),
            'per_class_probe_in': per_class_means(mine, 'probe_in'),
            'runs': len(mine)}
    pooled = rank_correlations(runs)
    plots = []
    if runs:
        labelled = [{**r, 'label': f"{r.get('teacher_setup')}/{r['loss']}",
                     'gap': {'relational_gap': r['gap']}, 'miou': r['zero_shot']} for r in runs]
        plots.append(gap_scatter(labelled, out / 'gap_vs_zero_shot.png'))
        plots.append(gap_scatter([{**r, 'miou': r['probe_in']} for r in labelled],
                                 out / 'gap_vs_probe.png', y_label='1% linear probe mIoU (%)'))
    if curves:
        plots.append(_curve_plot(curves, out / 'learning_curves.png'))
    payload = {'settings': settings, 'teacher_figures': teacher_figures,
               'per_teacher': per_teacher, 'spearman_all_runs': pooled,
               'learning_curves': list(curves), 'runs': list(runs)}
    write_text_atomic(out / 'paper.json', json.dumps(payload, indent=2) + '\n')

    lines = ['# Contrastive vs similarity vs relational distillation: a teacher sensitivity '
             'study (synthetic world)', '',
             f"Teachers: {', '.join(teachers)}. {settings.get('seeds')} seeds per teacher and "
             f"loss, {settings.get('steps')} steps per student (batch 2), "
             f"{settings.get('train_frames')} training scans; mIoU in %; zero-shot and probe on "
             'a validation drive of other scenes; "other rig": the 64-beam KITTI-like rig.', '']
    if settings.get('missing'):
        lines += ['Not run (missing from this report): ' + '; '.join(settings['missing']), '']
    if settings.get('imported'):
        lines += ['Runs taken from an earlier comparison (same configs; no per-class figures): '
                  + ', '.join(settings['imported']), '']
    lines += ['## The teachers\' own zero-shot mIoU', '',
              'teacher_pixels: every labelled pixel; teacher_projected: every point-pixel pair; '
              'teacher_visible: one pair per camera-visible point, the points of the '
              "student's teacher column (relkd_core.eval.teacher_scores).", '',
              '| teacher | val pixels | val projected | val visible | other rig pixels | '
              'other rig projected | other rig visible |', '|---|---:|---:|---:|---:|---:|---:|']
    for teacher in teachers:
        fig = teacher_figures.get(teacher) or {}
        cells = [_fmt((fig.get(split) or {}).get(name, {}).get('miou_pct'))
                 for split in ('val', 'ood')
                 for name in ('teacher_pixels', 'teacher_projected', 'teacher_visible')]
        lines.append(f'| {teacher} | ' + ' | '.join(cells) + ' |')
    lines += ['', '## Verdicts per claim and teacher', '',
              'Mean paired difference (loss − baseline, same seed) over seeds with its 95% '
              't-interval; holds: interval above 0; does not hold: below 0; undecided: it '
              'contains 0. Gap claim: Spearman rho of the gap with zero-shot and probe mIoU '
              'over the teacher\'s runs (holds when both are negative with a one-sided '
              'permutation p < 0.05; does not hold when both are positive so).', '',
              '| claim | ' + ' | '.join(
                  t + ''.join(f' (step {s})' for s in per_teacher[t]['snapshot_steps'])
                  for t in teachers) + ' |', '|---|' + '---|' * len(teachers)]
    for i, (claim, _, _, _) in enumerate((*PAIRED_CLAIMS, (GAP_CLAIM, '', '', ''))):
        cells = []
        for teacher in teachers:
            c = per_teacher[teacher]['claims'][i]
            if 'rho' in c:
                rho = c['rho']
                cells.append(f"{c['verdict']} (rho {_fmt(rho['zero_shot'], 2)}, "
                             f"{_fmt(rho['probe_in'], 2)})")
            else:
                cells.append(f"{c['verdict']}: {_interval(c)}")
        lines.append(f'| {claim} | ' + ' | '.join(cells) + ' |')
    for teacher in teachers:
        info = per_teacher[teacher]
        snapshot_steps = sorted({int(r['step']) for r in runs
                                 if r.get('teacher_setup') == teacher and r.get('step')})
        cut = (f", snapshots at step {', '.join(map(str, snapshot_steps))} of the "
               f"{settings.get('steps')}-step schedule" if snapshot_steps else '')
        lines += ['', f'## Teacher `{teacher}` ({info["runs"]} runs{cut})', '',
                  table_markdown(info['table']), '',
                  'Spearman rho of the gap with: ' + ', '.join(
                      f"{k} {_fmt(v['rho'], 2)}" for k, v in info['spearman'].items()), '']
        per_class = info['per_class_zero_shot']
        if per_class:
            losses = list(per_class)
            lines += ['Zero-shot per class: IoU % (mean predicted points per scan set), mean '
                      'over seeds', '', '| class | ' + ' | '.join(losses) + ' |',
                      '|---|' + '---:|' * len(losses)]
            for name in per_class[losses[0]]:
                lines.append(f'| {name} | ' + ' | '.join(
                    f"{_fmt(per_class[loss][name]['iou'])} "
                    f"({_fmt(per_class[loss][name]['predicted'], 0)})" for loss in losses)
                    + ' |')
    lines += ['', '## Spearman correlation of the gap with quality, all runs', '',
              ', '.join(f"{k} {_fmt(v['rho'], 2)} ({v['runs']} runs)"
                        for k, v in pooled.items())]
    if curves:
        steps = sorted({int(c['step']) for c in curves})
        losses = sorted({str(c['loss']) for c in curves})
        lines += ['', f"## Learning curves (teacher `{settings.get('curve_teacher')}`, seed 0, "
                  'snapshots of one run per loss of the longest length)', '',
                  '| loss | ' + ' | '.join(f'zero-shot @{s}' for s in steps) + ' | '
                  + ' | '.join(f'1% probe @{s}' for s in steps) + ' |',
                  '|---|' + '---:|' * (2 * len(steps))]
        for loss in losses:
            got = {int(c['step']): c for c in curves if c['loss'] == loss}
            cells = [_fmt(got.get(s, {}).get(k)) for k in ('zero_shot', 'probe_in')
                     for s in steps]
            lines.append(f'| {loss} | ' + ' | '.join(cells) + ' |')
    lines += [''] + [f'![{p}]({p})' for p in plots] + ['']
    write_text_atomic(out / 'paper.md', '\n'.join(lines))
    write_html(lines, out / 'paper.html', 'relkd teacher sensitivity study')
    return out / 'paper.md'
