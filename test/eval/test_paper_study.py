"""The sensitivity study's statistics: paired differences with t-intervals, verdicts,
Spearman correlations, per-class means, and the report it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relkd_core.eval.paper import (
    paired_difference,
    per_class_means,
    rank_correlations,
    spearman,
    spearman_p_values,
    study_claims,
    t_quantile,
    write_study,
)


def _run(loss: str, seed: int, zero_shot: float, probe_in: float, gap: float,
         teacher: str = 'synthetic', **extra: Any) -> dict[str, Any]:
    return {'teacher_setup': teacher, 'loss': loss, 'seed': seed, 'zero_shot': zero_shot,
            'probe_in': probe_in, 'probe_ood': probe_in - 10, 'zero_shot_ood': zero_shot - 5,
            'teacher': 50.0, 'cka': 1 - gap, 'gap': gap, **extra}


RUNS = [
    _run('contrastive', 0, 10.0, 30.0, 0.30), _run('contrastive', 1, 12.0, 32.0, 0.28),
    _run('contrastive', 2, 11.0, 31.0, 0.29),
    _run('similarity', 0, 25.0, 28.0, 0.20), _run('similarity', 1, 27.0, 26.0, 0.18),
    _run('similarity', 2, 26.0, 27.0, 0.19),
    _run('relational', 0, 24.0, 35.0, 0.10), _run('relational', 1, 26.0, 37.0, 0.08),
    _run('relational', 2, 25.0, 36.0, 0.09),
]


def test_t_quantile_values() -> None:
    assert t_quantile(1) == 12.706 and t_quantile(2) == 4.303 and t_quantile(200) == 1.96
    with pytest.raises(ValueError, match='at least 1'):
        t_quantile(0)


def test_paired_difference_interval_and_verdict() -> None:
    result = paired_difference(RUNS, 'zero_shot', 'relational', 'contrastive')
    assert result['seeds'] == [0, 1, 2] and result['differences'] == [14.0, 14.0, 14.0]
    assert result['mean'] == 14.0 and result['low'] == 14.0 and result['verdict'] == 'holds'
    noisy = [{**r, 'zero_shot': r['zero_shot'] + (30 if r['seed'] == 0 and
                                                  r['loss'] == 'contrastive' else 0)}
             for r in RUNS]
    result = paired_difference(noisy, 'zero_shot', 'relational', 'contrastive')
    # differences -16, 14, 14: mean 4, sd 17.32, half width 4.303 * 17.32 / sqrt(3) = 43.03
    assert result['mean'] == 4.0
    assert result['low'] == pytest.approx(4.0 - 43.03, abs=0.01)
    assert result['verdict'] == 'undecided'
    worse = paired_difference(RUNS, 'probe_in', 'similarity', 'relational')
    assert worse['verdict'] == 'does not hold' and worse['high'] < 0


def test_paired_difference_needs_two_shared_seeds() -> None:
    one = paired_difference(RUNS[:1] + RUNS[6:7], 'zero_shot', 'relational', 'contrastive')
    assert one['mean'] == 14.0 and one['low'] is None and one['verdict'] == 'undecided'
    none = paired_difference(RUNS[:3], 'zero_shot', 'relational', 'contrastive')
    assert none['mean'] is None and none['verdict'] == 'undecided'


def test_spearman_ranks_with_ties() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Monotone but not linear: Spearman 1, Pearson below 1.
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    # Ties take their mean rank: ranks of y are (0.5, 0.5, 2, 3).
    expected = np.corrcoef([0, 1, 2, 3], [0.5, 0.5, 2, 3])[0, 1]
    assert spearman([1, 2, 3, 4], [5, 5, 6, 7]) == pytest.approx(expected)
    assert spearman([1, 2], [1, 2]) is None


def test_rank_correlations_and_gap_claim() -> None:
    rho = rank_correlations(RUNS)
    assert rho['probe_in']['runs'] == 9 and rho['probe_in']['rho'] < -0.4
    claims = study_claims(RUNS)
    assert [c['verdict'] for c in claims[:3]] == ['holds', 'holds', 'holds']
    assert claims[3]['rho'] == {'zero_shot': rho['zero_shot']['rho'],
                                'probe_in': rho['probe_in']['rho']}
    # Quality falling with the gap in every run: significant, the claim holds.
    ordered = [{**r, 'gap': 0.01 * i, 'zero_shot': 50.0 - i, 'probe_in': 60.0 - i}
               for i, r in enumerate(RUNS)]
    assert study_claims(ordered)[3]['verdict'] == 'holds'
    rising = [{**r, 'zero_shot': 10.0 + i, 'probe_in': 20.0 + i} for i, r in enumerate(ordered)]
    assert study_claims(rising)[3]['verdict'] == 'does not hold'
    # Three runs cannot decide it whatever their order (smallest p is 1/6).
    assert study_claims(ordered[:3])[3]['verdict'] == 'undecided'


def test_spearman_p_values_exact_and_sampled() -> None:
    assert spearman_p_values([1, 2, 3], [3, 2, 1]) == pytest.approx((1 / 6, 1.0))
    low, high = spearman_p_values(list(range(10)), list(range(10)))
    assert high < 1e-3 and low == 1.0
    assert spearman_p_values([1, 2], [1, 2]) is None


def test_per_class_means_average_iou_and_predicted_counts() -> None:
    stored = [{**r, 'per_class': {'zero_shot': {
        'per_class_iou': {'car': 10.0 * (r['seed'] + 1), 'bus': None},
        'predicted_points': {'car': 100 * (r['seed'] + 1), 'bus': 0}}}} for r in RUNS]
    means = per_class_means(stored)
    assert means['relational']['car'] == {'iou': 20.0, 'predicted': 200}
    assert means['relational']['bus'] == {'iou': None, 'predicted': 0}
    assert per_class_means(RUNS) == {}


def test_write_study_report_names_every_teacher_and_verdict(tmp_path: Path) -> None:
    runs = RUNS + [{**r, 'teacher_setup': 'learned'} for r in RUNS]
    curves = [{'loss': loss, 'step': step, 'zero_shot': 10.0 + step / 100,
               'probe_in': 20.0 + step / 100} for loss in ('contrastive', 'relational')
              for step in (150, 300)]
    figures = {'synthetic': {split: {name: {'miou_pct': 20.0} for name in (
        'teacher_pixels', 'teacher_projected', 'teacher_visible')} for split in ('val', 'ood')}}
    settings = {'teachers': ['synthetic', 'learned'], 'seeds': 3, 'steps': 300,
                'train_frames': 20, 'curve_teacher': 'synthetic', 'missing': []}
    report = write_study(tmp_path, runs, settings, curves, figures)
    text = report.read_text()
    assert '| relational beats contrastive in zero-shot mIoU | holds: +14.0 [+14.0, +14.0] |' \
        in text
    assert '## Teacher `learned` (9 runs)' in text and 'zero-shot @300' in text
    payload = json.loads((tmp_path / 'paper.json').read_text())
    assert set(payload['per_teacher']) == {'synthetic', 'learned'}
    assert payload['spearman_all_runs']['zero_shot']['runs'] == 18
    assert (tmp_path / 'learning_curves.png').is_file() and (tmp_path / 'paper.html').is_file()
