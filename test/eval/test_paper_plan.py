"""The paper's protocols on its datasets as a command chain, proven on synthetic data in the
datasets' own layouts: every command parses with its program's real parser, and the CPU
stages (convert, prepare) run end to end through their real ``main(argv)``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relkd_core.cli import bench, convert, prepare, train
from relkd_core.cli import eval as eval_cli
from relkd_core.data.prepared import PreparedDataset
from relkd_core.eval.paper_plan import EVALUATIONS, collect_run, dataset_plan

PARSERS = {'relkd-convert': convert.build_parser, 'relkd-prepare': prepare.build_parser,
           'relkd-eval': eval_cli.build_parser, 'relkd-train': train.build_parser}
MAINS = {'relkd-convert': convert.main, 'relkd-prepare': prepare.main}


def test_paper_plan_commands_parse_with_the_real_parsers(tmp_path: Path) -> None:
    plan = dataset_plan(tmp_path / 'paper', nuscenes_root=Path('/data/nuscenes'),
                        semantickitti_root=Path('/data/semantickitti'), gpus=1)
    names = [step.name for step in plan]
    assert names[:4] == ['convert nuScenes train', 'convert nuScenes val',
                         'convert SemanticKITTI train', 'convert SemanticKITTI val']
    assert len(plan) == 4 + 4 + 3 * (1 + len(EVALUATIONS))
    for step in plan:
        argv = step.expanded()  # no bags exist yet: bag folders expand to nothing
        if argv[0] == 'relkd-prepare':
            argv += ['--bag', 'x']
        PARSERS[argv[0]]().parse_args(argv[1:])
    assert "$(printf -- '--bag %s ' " in plan[4].command()


def test_paper_plan_trains_with_torchrun_on_several_gpus(tmp_path: Path) -> None:
    plan = dataset_plan(tmp_path, nuscenes_root=Path('/d'), gpus=8, losses=('relational',))
    train_step = next(s for s in plan if s.name == 'train relational')
    assert train_step.argv[:5] == ('torchrun', '--nproc_per_node', '8', '-m',
                                   'relkd_core.cli.train')
    assert 'loss.weights={relational: 1.0}' in train_step.argv
    assert not any('semantickitti' in s.command() for s in plan)  # no --ood


def test_paper_plan_cpu_stages_run_on_synthetic_layouts(
        nuscenes_root: Path, kitti_root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The synthetic roots hold one scene per nuScenes mini split and sequences 00 (train) and
    # 08 (val); 'mini' splits stand in for train/val here.
    out = tmp_path / 'paper'
    plan = dataset_plan(out, nuscenes_root=nuscenes_root, version='v1.0-mini',
                        semantickitti_root=kitti_root, teacher='none', losses=())
    for step in plan:
        argv = step.expanded()
        if argv[0] == 'relkd-convert' and argv[1] == 'nuscenes':
            argv[argv.index('--split') + 1] = {'train': 'mini_train', 'val': 'mini_val'}[
                argv[argv.index('--split') + 1]]
        step.output.parent.mkdir(parents=True, exist_ok=True)  # as relkd-bench does
        assert MAINS[argv[0]](argv[1:]) == 0, step.command()
        assert step.output.exists()
    kitti_val = PreparedDataset(out / 'prepared' / 'semantickitti_val')
    assert kitti_val.manifest['preset']['taxonomy'] == 'semantickitti19' and len(kitti_val) == 3
    assert len(PreparedDataset(out / 'prepared' / 'nuscenes_val')) == 2  # scene-0103


def test_paper_plan_collects_the_table_row(tmp_path: Path) -> None:
    for key, _, _, _, _ in EVALUATIONS:
        folder = tmp_path / 'eval' / 'relational' / key
        folder.mkdir(parents=True)
        metrics = {'miou': 10.0 + len(key)}
        if key == 'zero_shot':
            metrics.update(teacher_miou=40.0, gap={'cka': 0.5, 'relational_gap': 0.1})
        (folder / 'metrics.json').write_text(json.dumps(metrics))
    run = collect_run(tmp_path, 'relational')
    assert run['zero_shot'] == 19.0 and run['teacher'] == 40.0 and run['gap'] == 0.1
    assert run['probe_ood'] == 19.0 and collect_run(tmp_path, 'similarity')['probe_in'] is None


def test_bench_paper_dry_run_prints_the_chain(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'paper'
    assert bench.main(['paper', '--dataset', 'nuscenes', '--dataroot', '/data/nuscenes',
                       '--ood', 'semantickitti', '--ood-dataroot', '/data/semantickitti',
                       '--gpus', '8', '--out', str(out), '--dry-run']) == 0
    printed = capsys.readouterr().out
    assert printed.count('\nrelkd-eval ') == 3 * len(EVALUATIONS)
    assert '# 1. convert nuScenes train: 28130 scans' in printed
    assert 'relkd-convert semantickitti --dataroot /data/semantickitti --split val' in printed
    assert not out.exists()  # a dry run writes nothing


def test_bench_paper_dataset_needs_its_dataroot(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(['paper', '--dataset', 'nuscenes', '--dry-run']) == 2
    assert '--dataset nuscenes needs --dataroot' in capsys.readouterr().err
