"""``relkd-bench paper`` end to end on a tiny grid, and its reuse of earlier runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from relkd_core.cli.bench import _import_runs, build_parser, main
from relkd_core.cli.common import UsageError


@pytest.mark.slow
def test_cli_bench_paper_tiny_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'study'
    argv = ['paper', '--out', str(out), '--teachers', 'synthetic', '--seeds', '2',
            '--losses', 'contrastive', 'relational', '--train-frames', '2',
            '--eval-frames', '2', '--steps', '2', '--curve-steps', '1,2', '--threads', '1',
            '--jobs', '2']
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert '## Verdicts per claim and teacher' in printed
    payload = json.loads((out / 'paper.json').read_text())
    assert payload['settings']['missing'] == []
    assert len(payload['runs']) == 4
    run = payload['runs'][0]
    assert set(run['per_class']['zero_shot']['per_class_iou']) >= {'car', 'pedestrian'}
    assert sum(run['per_class']['zero_shot']['predicted_points'].values()) > 0
    claim = payload['per_teacher']['synthetic']['claims'][0]
    assert claim['seeds'] == [0, 1] and claim['verdict'] in (
        'holds', 'does not hold', 'undecided')
    assert sorted((c['loss'], c['step']) for c in payload['learning_curves']) == [
        ('contrastive', 1), ('contrastive', 2), ('relational', 1), ('relational', 2)]
    figures = payload['teacher_figures']['synthetic']['val']
    assert set(figures) == {'teacher_pixels', 'teacher_projected', 'teacher_visible'}
    # A rerun reuses every run and writes the same table.
    assert main([*argv, '--report-only']) == 0
    again = json.loads((out / 'paper.json').read_text())
    assert again['per_teacher'] == payload['per_teacher']
    # Snapshots of a curve run cut short are evaluated without training; the steps it did
    # not reach are listed as missing.
    curve = out / 'runs' / 'synthetic' / 'curve_relational'
    (curve / 'curve_eval_step1.json').unlink()
    (curve / 'curve_eval_step2.json').unlink()
    (curve / 'checkpoints' / 'step_0000002.pt').unlink()
    log = curve.with_name('curve_relational.train.log')
    trained = log.read_text()
    assert main([*argv, '--curves-only', '--snapshots-on-disk']) == 0
    assert log.read_text() == trained
    partial = json.loads((out / 'paper.json').read_text())
    assert partial['settings']['missing'] == ['synthetic relational learning curve step 2']
    assert ('relational', 1) in {(c['loss'], c['step']) for c in partial['learning_curves']}


def _args(**overrides: object) -> argparse.Namespace:
    args = build_parser().parse_args(['paper'])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_bench_import_runs_writes_cached_evaluations(tmp_path: Path) -> None:
    earlier = tmp_path / 'paper.json'
    earlier.write_text(json.dumps({
        'settings': {'steps': 300, 'train_frames': 20, 'eval_frames': 8,
                     'label_fraction': 0.01},
        'runs': [{'loss': 'relational', 'seed': 1, 'zero_shot': 16.0}]}))
    note = _import_runs(tmp_path / 'out', earlier, _args())
    cached = json.loads((tmp_path / 'out' / 'runs' / 'synthetic' / 'relational_seed1' /
                         'paper_eval.json').read_text())
    assert cached['zero_shot'] == 16.0 and cached['teacher_setup'] == 'synthetic'
    assert cached['imported_from'] == str(earlier) and note.startswith('1 synthetic')


def test_bench_import_runs_refuses_other_settings(tmp_path: Path) -> None:
    earlier = tmp_path / 'paper.json'
    earlier.write_text(json.dumps({'settings': {'steps': 100, 'train_frames': 20,
                                                'eval_frames': 8, 'label_fraction': 0.01},
                                   'runs': []}))
    with pytest.raises(UsageError, match=r"settings differ.*'steps': \(100, 300\)"):
        _import_runs(tmp_path / 'out', earlier, _args())
    earlier.write_text('{}')
    with pytest.raises(UsageError, match=r'not a paper\.json'):
        _import_runs(tmp_path / 'out', earlier, _args())


@pytest.mark.parametrize(('argv', 'message'), [
    (['--teachers', 'clip'], "--teachers: unknown \\['clip'\\]"),
    (['--curve-steps', '150,200'], '--curve-steps: positive multiples'),
])
def test_bench_paper_bad_arguments(argv: list[str], message: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['paper', '--out', str(tmp_path / 'x'), *argv]) == 2
    assert message.replace('\\', '') in capsys.readouterr().err
