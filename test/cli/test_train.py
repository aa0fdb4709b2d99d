"""relkd-train end to end on tiny data: real main(), torchrun DDP, kill -9 and resume."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from relkd_core.atomic import staging_prefix
from relkd_core.cli.train import main
from relkd_core.data.preset import load_preset
from relkd_core.models.distilled import load_checkpoint
from relkd_core.outputs import LOCK_NAME, OutputLock, mark_output
from relkd_core.train.run_folder import RUN_KIND

TINY_STUDENT = {'variant': '14', 'width_multiplier': 0.125, 'out_dim': 16,
                'voxel_size_m': 0.4, 'voxelization': 'cartesian'}


def _config(tmp_path: Path, data: dict[str, object], **top: object) -> Path:
    config: dict[str, object] = {
        'out_dir': str(tmp_path / 'run'), 'data': data, 'student': TINY_STUDENT,
        'loss': {'weights': {'relational': 1.0}, 'pairs_per_batch': 256},
        'steps': 2, 'batch_size': 2, 'log_every': 1, 'checkpoint_every': 1,
    }
    config.update(top)
    path = tmp_path / 'train.yaml'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def _metrics(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(('loss', 'part'), [
    ({'weights': {'contrastive': 1.0}, 'superpixels': True}, 'contrastive/segments'),
    ({'weights': {'similarity': 1.0}}, 'similarity/cosine'),
    ({'weights': {'relational': 1.0}}, 'relational/intra'),
])
def test_train_main_two_steps_per_loss(tiny_prepared: Path, tmp_path: Path,
                                       loss: dict[str, object], part: str) -> None:
    config = _config(tmp_path, {'prepared': str(tiny_prepared)},
                     loss={**loss, 'pairs_per_batch': 256})
    assert main(['--config', str(config)]) == 0
    run = tmp_path / 'run'
    records = _metrics(run)
    assert [r['step'] for r in records] == [1, 2]
    assert all(math.isfinite(r['loss']) and r['loss'] > 0 for r in records)
    assert all(part in r and 0.0 <= r['zero_shot_accuracy'] <= 1.0 for r in records)
    student = load_checkpoint(run / 'student.pt')
    assert student.step == 2 and student.training is None
    assert student.text_embeddings is not None and student.text_embeddings.shape == (16, 384)
    assert student.vocabulary is not None and student.vocabulary.names[3] == 'car'
    assert student.teacher.name == 'synthetic' and student.teacher.id == student.teacher_id
    assert student.run_config['loss']['weights'] == loss['weights']
    assert (run / 'config.yaml').exists() and (run / 'last.pt').exists()
    # The checkpoint is plain data: torch's safe loader reads it without any allow-listing.
    raw = torch.load(run / 'student.pt', weights_only=True)
    assert raw['format'] == 'relkd-checkpoint/3'
    assert json.loads(raw['teacher']) == {'name': 'synthetic', 'config': None,
                                          'id': student.teacher_id}
    # How the scans were read and the labels' taxonomy travel with the student.
    lidar = load_preset('synth-nuscenes').lidar
    assert student.scan_input == lidar.scan_input and student.taxonomy == 'nuscenes16'


@pytest.mark.slow
def test_train_main_prepares_bags_first(tiny_bags: dict[tuple[str, str], Path],
                                        tmp_path: Path) -> None:
    bag = tiny_bags[('nuscenes', 'sqlite3')]
    config = _config(tmp_path, {'bags': [str(bag)], 'preset': 'synth-nuscenes',
                                'teacher': 'synthetic'}, steps=1)
    assert main(['--config', str(config)]) == 0
    assert (tmp_path / 'run' / 'prepared' / 'manifest.json').exists()
    assert load_checkpoint(tmp_path / 'run' / 'student.pt').step == 1


def test_train_main_teacher_mismatch_is_an_error(
        tiny_prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher_config = tmp_path / 'teacher.yaml'
    teacher_config.write_text('pixel_noise: 0.5\n')
    config = _config(tmp_path, {'prepared': str(tiny_prepared),
                                'teacher_config': str(teacher_config)})
    assert main(['--config', str(config)]) == 1
    assert 'holds features of teacher' in capsys.readouterr().err


@pytest.mark.parametrize(('overrides', 'message'), [
    (['--set', 'stepz=3'], "did you mean 'steps'"),
    (['--set', 'loss.weights={infonce: 1}'], 'unknown loss'),
    (['--set', 'data.bags=[x]'], 'not both'),
    (['--resume'], 'nothing to resume'),
])
def test_train_main_bad_usage_exits_2(tiny_prepared: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str],
                                      overrides: list[str], message: str) -> None:
    config = _config(tmp_path, {'prepared': str(tiny_prepared)})
    assert main(['--config', str(config), *overrides]) == 2
    assert message in capsys.readouterr().err


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                         env.get('PYTHONPATH', '')])
    return env


def _start(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, '-m', 'relkd_core.cli.train', '--config',
                             str(config), *extra], env=_subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(path: Path, process: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f'the run ended ({process.returncode}) before {path.name}: '
                                 f'{process.stderr.read().decode() if process.stderr else ""}')
        assert time.monotonic() < deadline, f'{path} did not appear'
        time.sleep(0.02)


@pytest.mark.slow
def test_train_kill_9_then_resume_repeats_the_losses(tiny_prepared: Path,
                                                     tmp_path: Path) -> None:
    common = {'steps': 8, 'checkpoint_every': 3, 'deterministic': True, 'batch_size': 1,
              'augment': {'point_dropout': 0.1}}
    reference = _config(tmp_path / 'a', {'prepared': str(tiny_prepared)}, **common)
    victim = _config(tmp_path / 'b', {'prepared': str(tiny_prepared)}, **common)
    process = _start(reference)
    assert process.wait(timeout=300) == 0, process.stderr.read().decode()  # type: ignore[union-attr]
    expected = _metrics(tmp_path / 'a' / 'run')

    process = _start(victim)
    _wait_for(tmp_path / 'b' / 'run' / 'checkpoints' / 'step_0000003.pt', process)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    resumed = subprocess.run([sys.executable, '-m', 'relkd_core.cli.train', '--config',
                              str(victim), '--resume'], env=_subprocess_env(),
                             capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()
    got = _metrics(tmp_path / 'b' / 'run')
    assert [r['step'] for r in got] == list(range(1, 9))
    for a, b in zip(expected, got, strict=True):
        assert a['loss'] == b['loss'], (a['step'], a['loss'], b['loss'])
    final_a = load_checkpoint(tmp_path / 'a' / 'run' / 'student.pt').state_dict
    final_b = load_checkpoint(tmp_path / 'b' / 'run' / 'student.pt').state_dict
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


@pytest.mark.slow
def test_train_sigterm_checkpoints_then_exits_130(tiny_prepared: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, {'prepared': str(tiny_prepared)}, steps=500,
                     checkpoint_every=1000, batch_size=1)
    process = _start(config)
    _wait_for(tmp_path / 'run' / 'metrics.jsonl', process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 130
    last = load_checkpoint(tmp_path / 'run' / 'last.pt')
    assert 1 <= last.step < 500 and last.training is not None
    assert not (tmp_path / 'run' / 'student.pt').exists()


@pytest.mark.slow
def test_train_torchrun_two_processes_gloo(tiny_prepared: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, {'prepared': str(tiny_prepared)}, steps=2, batch_size=1)
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
         '--standalone', '-m', 'relkd_core.cli.train', '--config', str(config)],
        env={**_subprocess_env(), 'OMP_NUM_THREADS': '1'}, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    run = tmp_path / 'run'
    assert [r['step'] for r in _metrics(run)] == [1, 2]  # rank 0 alone writes
    checkpoint = load_checkpoint(run / 'last.pt')
    assert checkpoint.training is not None and checkpoint.training['world_size'] == 2
    # 3 frames over 2 ranks at 1 scan per step: 2 steps per epoch on each rank.
    assert checkpoint.training['steps_per_epoch'] == 2
    # Resuming it with one process is refused with a clear message.
    assert main(['--config', str(tmp_path / 'train.yaml'), '--resume']) == 1


@pytest.fixture(scope='module')
def trained_run(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step run (last.pt, student.pt, checkpoints), to copy and misuse."""
    root = tmp_path_factory.mktemp('trained')
    assert main(['--config', str(_config(root, {'prepared': str(tiny_prepared)}))]) == 0
    return root / 'run'


@pytest.mark.slow
def test_train_refuses_a_run_folder_with_checkpoints_without_resume(
        trained_run: Path, tiny_prepared: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / 'run'
    shutil.copytree(trained_run, run)
    config = _config(tmp_path, {'prepared': str(tiny_prepared)})
    before = {p: p.read_bytes() for p in run.rglob('*') if p.is_file()}
    # The README's "--set steps=50" example against an existing run: refused, nothing touched.
    assert main(['--config', str(config), '--set', 'steps=50']) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f'relkd-train: error: out_dir {run} already holds a run (last.pt, student.pt, '
        'checkpoints/step_0000001.pt and 1 more); a new run there would replace it: pass '
        '--resume to continue it, or choose another out_dir (--set out_dir=...)')
    assert {p: p.read_bytes() for p in run.rglob('*') if p.is_file()} == before


@pytest.mark.slow
def test_train_resume_takes_the_newest_step_file_when_last_pt_is_missing(
        trained_run: Path, tiny_prepared: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Killed between writing checkpoints/step_*.pt and linking last.pt to it.
    run = tmp_path / 'run'
    shutil.copytree(trained_run, run)
    (run / 'last.pt').unlink()
    (run / 'student.pt').unlink()
    newest = sorted((run / 'checkpoints').glob('step_*.pt'))[-1]
    config = _config(tmp_path, {'prepared': str(tiny_prepared)})
    assert main(['--config', str(config), '--resume']) == 0
    assert f'last.pt is missing; resuming from {newest}' in capsys.readouterr().err
    assert load_checkpoint(run / 'last.pt').step == load_checkpoint(newest).step == 2
    assert (run / 'student.pt').exists()


@pytest.mark.slow
def test_train_second_trainer_refuses_naming_the_owner(
        tiny_prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, {'prepared': str(tiny_prepared)})
    run = tmp_path / 'run'
    run.mkdir()
    with OutputLock(run, 'relkd-train'):  # a trainer of this process owns the folder
        assert main(['--config', str(config)]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        f'relkd-train: error: {run} is in use by relkd-train (pid {os.getpid()})')
    assert list(run.iterdir()) == []  # its lock went with it; nothing was added


@pytest.mark.slow
def test_train_takes_over_the_lock_and_sweeps_the_temporaries_of_a_dead_run(
        tiny_prepared: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, {'prepared': str(tiny_prepared)}, steps=1)
    run = tmp_path / 'run'
    (run / 'checkpoints').mkdir(parents=True)
    mark_output(run, RUN_KIND)
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    (run / LOCK_NAME).write_text(json.dumps({'owner': 'relkd-train', 'pid': dead.pid}))
    host = staging_prefix(run / 'x').split('.')[-2]
    leftovers = [run / 'checkpoints' / f'.step_0000001.pt.{dead.pid}.{host}.abc123.tmp',
                 run / f'.last.pt.{dead.pid}.{host}.link.tmp']
    for path in leftovers:
        path.write_bytes(b'half a checkpoint')
    assert main(['--config', str(config)]) == 0
    assert load_checkpoint(run / 'student.pt').step == 1
    assert not [p for p in run.rglob('.*.tmp')]


@pytest.mark.slow
@pytest.mark.parametrize(('edit', 'message'), [
    (lambda raw: raw['training'].pop('optimizer'),
     "cannot resume from this checkpoint: its training state does not fit this run (lacks "
     "'optimizer')"),
    (lambda raw: raw['training'].update(steps_per_epoch=7),
     'the checkpoint was written with 7 steps per epoch, this run has 2'),
], ids=['missing-state', 'other-data'])
def test_train_resume_with_inconsistent_state_fails_in_one_line(
        trained_run: Path, tiny_prepared: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], edit: Any, message: str) -> None:
    run = tmp_path / 'run'
    shutil.copytree(trained_run, run)
    config = _config(tmp_path, {'prepared': str(tiny_prepared)})
    raw = torch.load(run / 'last.pt', weights_only=True)
    edit(raw)
    (run / 'last.pt').unlink()
    torch.save(raw, run / 'last.pt')
    assert main(['--config', str(config), '--resume', '--set', 'steps=3']) == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert message in err.splitlines()[-1]
