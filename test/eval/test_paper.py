"""The paper comparison's aggregation, correlations and claim verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from relkd_core.eval.paper import aggregate, claims, correlations, table_markdown


def _run(loss: str, seed: int, zero_shot: float, probe_in: float, gap: float,
         **extra: Any) -> dict[str, Any]:
    return {'loss': loss, 'seed': seed, 'zero_shot': zero_shot, 'probe_in': probe_in,
            'probe_ood': probe_in - 10, 'zero_shot_ood': zero_shot - 5, 'teacher': 50.0,
            'cka': 1 - gap, 'gap': gap, **extra}


RUNS = [
    _run('contrastive', 0, 10.0, 30.0, 0.30), _run('contrastive', 1, 12.0, 32.0, 0.28),
    _run('similarity', 0, 25.0, 28.0, 0.20), _run('similarity', 1, 27.0, 26.0, 0.18),
    _run('relational', 0, 24.0, 35.0, 0.10), _run('relational', 1, 26.0, 37.0, 0.08),
]


def test_aggregate_mean_and_sample_std_per_loss() -> None:
    table = aggregate(RUNS)
    assert table['contrastive']['zero_shot'] == {'mean': 11.0, 'std': pytest.approx(2 ** 0.5),
                                                 'n': 2}
    assert table['relational']['gap']['mean'] == pytest.approx(0.09)
    assert aggregate([_run('relational', 0, 1.0, 2.0, 0.1)])['relational']['cka']['std'] == 0.0


def test_aggregate_skips_missing_values() -> None:
    runs = [_run('similarity', 0, 1.0, 2.0, 0.1, probe_ood=None), _run('similarity', 1, 3.0,
                                                                        4.0, 0.2)]
    assert aggregate(runs)['similarity']['probe_ood']['n'] == 1


def test_correlations_sign_follows_the_data() -> None:
    corr = correlations(RUNS)
    assert corr['probe_in'] is not None and corr['probe_in'] < -0.5
    # zero-shot: contrastive has the largest gap and the lowest mIoU.
    assert corr['zero_shot'] is not None and corr['zero_shot'] < 0


def test_claims_state_agreement_and_disagreement() -> None:
    verdicts = claims(aggregate(RUNS), correlations(RUNS))
    assert [v['agrees'] for v in verdicts] == [True, True, True, True]
    flipped = [{**r, 'probe_in': 100 - r['probe_in']} for r in RUNS]
    verdicts = claims(aggregate(flipped), correlations(flipped))
    assert verdicts[1]['agrees'] is False and verdicts[3]['agrees'] is False
    assert claims(aggregate(RUNS[:2]), {})[0]['agrees'] is None


def test_table_markdown_has_one_row_per_loss_with_mean_and_std() -> None:
    text = table_markdown(aggregate(RUNS))
    assert '| contrastive | 2 | 11.0 ± 1.4 |' in text
    assert text.count('\n') == 4  # header, rule, three losses
