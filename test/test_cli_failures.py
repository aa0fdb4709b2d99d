"""Every command × an ordinary mistake: exit code, one error line, no traceback, nothing left.

Each row is a user error found by an adversarial pass over the commands (issue 20): the
command must refuse it with exit code 1 (a failure while running) or 2 (bad usage), say why in
one line on stderr, and leave the folder exactly as it was: nothing deleted, replaced or added.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from infer.checkpoints import write_tiny_checkpoint

from relkd_core.cli import eval as eval_cli
from relkd_core.cli import export, label, prepare, synth, train
from relkd_core.data.prepared import PreparedDataset
from relkd_core.models import StudentConfig
from relkd_core.models.distilled import (
    DistilledStudent,
    StudentCheckpoint,
    TeacherRef,
    save_checkpoint,
)
from relkd_core.outputs import mark_output
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.record import record_drive
from relkd_core.sim.rig import RIGS
from relkd_core.train.run_folder import RUN_KIND

Main = Callable[[list[str] | None], int]


@dataclass(frozen=True)
class Fixtures:
    """Inputs each case may use, all inside the case's own folder ``root``."""

    root: Path
    bag: Path          # a 2-scan lidar-only drive (MCAP)
    prepared: Path     # the tiny prepared dataset (synthetic teacher)
    checkpoint: Path   # a tiny student of a fake teacher (what relkd-label and -export read)
    student: Path      # a tiny student of the prepared dataset's teacher (what relkd-eval reads)


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ('echo this must never run',))


def _notes(path: Path) -> Path:
    path.mkdir()
    (path / 'thesis.tex').write_text('years of work')
    return path


def _file(path: Path, data: bytes = b'mine') -> Path:
    path.write_bytes(data)
    return path


def _cut_mcap(bag: Path, share: float) -> Path:
    mcap = next(bag.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[:int(mcap.stat().st_size * share)])
    return bag


def _train_config(fx: Fixtures, **top: object) -> Path:
    import yaml

    config = {'out_dir': str(fx.root / 'run'), 'data': {'prepared': str(fx.prepared)},
              'student': {'variant': '14', 'width_multiplier': 0.125, 'out_dim': 16,
                          'voxel_size_m': 0.4},
              'steps': 2, 'batch_size': 2, **top}
    path = fx.root / 'train.yaml'
    path.write_text(yaml.safe_dump(config))
    return path


def _fake_run(fx: Fixtures) -> list[str]:
    """Make a run folder holding an empty last.pt; no extra arguments."""
    run = fx.root / 'run'
    (run / 'checkpoints').mkdir(parents=True)
    mark_output(run, RUN_KIND)
    _file(run / 'last.pt', b'')
    return []


def _damaged_dataset(fx: Fixtures) -> Path:
    data = fx.root / 'damaged'
    shutil.copytree(fx.prepared, data)
    points = data / 'shards' / '000000' / 'points.npy'
    points.write_bytes(points.read_bytes()[:300])
    return data


@dataclass(frozen=True)
class Case:
    command: str
    mistake: str
    argv: Callable[[Fixtures], list[str]]
    code: int
    message: str  # a regex for the error line after '<prog>: error: '


MAINS: dict[str, Main] = {'relkd-synth': synth.main, 'relkd-label': label.main,
                          'relkd-export': export.main, 'relkd-prepare': prepare.main,
                          'relkd-train': train.main, 'relkd-eval': eval_cli.main}

CASES = [
    # 3: --overwrite deleted whatever --out named.
    Case('relkd-synth', 'overwrite a folder of notes',
         lambda fx: ['--out', str(_notes(fx.root / 'notes')), '--frames', '1', '--overwrite'],
         2, r'--out .*/notes already exists and is a folder that relkd did not write, not a '
            r'synth-bag; it is never replaced: choose a new path'),
    Case('relkd-synth', 'overwrite a regular file',
         lambda fx: ['--out', str(_file(fx.root / 'drive.mcap')), '--frames', '1',
                     '--overwrite'],
         2, r'--out .*/drive\.mcap is a file, but a synth-bag is a folder; choose a new path'),
    Case('relkd-synth', 'out inside a file',
         lambda fx: ['--out', str(_file(fx.root / 'f') / 'drive'), '--frames', '1'],
         2, r'--out .*/f/drive: .*/f is a file, not a folder'),
    Case('relkd-synth', 'binary rig file',
         lambda fx: ['--out', str(fx.root / 'drive'), '--rig',
                     str(_file(fx.root / 'rig.yaml', b'\x80\x04\x95'))],
         2, r'--rig: .*rig\.yaml: not a YAML text file \(not UTF-8: byte 0 is 0x80\)'),
    # 2: the guard refused only the input itself or a folder above it.
    Case('relkd-label', "out is the input bag's own file",
         lambda fx: ['--checkpoint', str(fx.checkpoint), '--bag', str(fx.bag), '--out',
                     str(fx.bag / 'drive.mcap'), '--overwrite'],
         2, r'--out .*/drive/drive\.mcap lies inside the input .*/drive; choose an output path '
            r'apart from every input'),
    Case('relkd-label', 'out spelled through .. to the input',
         lambda fx: ['--checkpoint', str(fx.checkpoint), '--bag', str(fx.bag), '--out',
                     str(fx.root / 'x' / '..' / 'drive'), '--overwrite'],
         2, r'--out .*/x/\.\./drive \(= .*/drive\) is the input .*/drive; choose an output '
            r'path apart from every input'),
    Case('relkd-label', 'overwrite a folder of notes',
         lambda fx: ['--checkpoint', str(fx.checkpoint), '--bag', str(fx.bag), '--out',
                     str(_notes(fx.root / 'notes')), '--overwrite'],
         2, r'--out .*/notes already exists and is a folder that relkd did not write, not a '
            r'labeled-bag; it is never replaced: choose a new path'),
    # 11: torch's advice to disable weights_only; an empty file said "()".
    Case('relkd-label', 'empty checkpoint',
         lambda fx: ['--checkpoint', str(_file(fx.root / 'empty.pt', b'')), '--bag',
                     str(fx.bag), '--out', str(fx.root / 'labeled')],
         1, r'.*/empty\.pt: the file is empty \(0 bytes\), not a relkd checkpoint; was it '
            r'written or copied completely\?'),
    Case('relkd-label', 'checkpoint that would run code',
         lambda fx: ['--checkpoint', str(fx.root / 'evil.pt'), '--bag', str(fx.bag), '--out',
                     str(fx.root / 'labeled')],
         1, r'.*/evil\.pt: refused: it holds objects other than tensors, numbers and strings '
            r'\(.*\); relkd never runs code stored in a file'),
    # 9: an MCAP cut at 2 % was blamed on the topic names.
    Case('relkd-label', 'MCAP cut at 2 %',
         lambda fx: ['--checkpoint', str(fx.checkpoint), '--bag', str(_cut_mcap(fx.bag, 0.02)),
                     '--out', str(fx.root / 'labeled')],
         1, r'.*/drive is damaged: the MCAP file ends without its footer \(truncated at byte '
            r'\d+ of \d+\) and what is left has no usable lidar topic: .*'),
    # 4: --overwrite replaced the trained checkpoint with TorchScript.
    Case('relkd-export', 'out is the checkpoint',
         lambda fx: ['--checkpoint', str(fx.checkpoint), '--out', str(fx.checkpoint),
                     '--overwrite'],
         2, r'--out .*/student\.pt is the input .*/student\.pt; choose an output path apart '
            r'from every input'),
    Case('relkd-export', 'overwrite a file it did not write',
         lambda fx: ['--checkpoint', str(fx.checkpoint), '--out', str(_file(fx.root / 'a.ts')),
                     '--overwrite'],
         2, r'--out .*/a\.ts already exists and is not a torchscript-export; it is never '
            r'replaced: choose a new path'),
    # 7 and 9: prepare left a complete-looking dataset, or a traceback.
    Case('relkd-prepare', 'out is a file',
         lambda fx: ['--bag', str(fx.bag), '--preset', 'synth-nuscenes', '--out',
                     str(_file(fx.root / 'prepared'))],
         2, r'--out .*/prepared is a file, but a prepared-dataset is a folder; choose a new '
            r'path'),
    Case('relkd-prepare', 'missing bag',
         lambda fx: ['--bag', str(fx.root / 'nope'), '--preset', 'synth-nuscenes', '--out',
                     str(fx.root / 'prepared')],
         2, r'--bag .*/nope: no such bag file or folder'),
    Case('relkd-prepare', 'unreadable bag',
         lambda fx: ['--bag', str(_file(fx.root / 'x.db3', b'SQLite format 3\x00 cut')),
                     '--preset', 'synth-nuscenes', '--out', str(fx.root / 'prepared')],
         1, r'no usable frame in the given bags: cannot open bag .*/x\.db3: .*; no dataset '
            r'written'),
    Case('relkd-prepare', 'MCAP cut at 2 %',
         lambda fx: ['--bag', str(_cut_mcap(fx.bag, 0.02)), '--preset', 'synth-nuscenes',
                     '--out', str(fx.root / 'prepared')],
         1, r"no usable frame in the given bags: bag .*/drive is damaged: its MCAP file ends "
            r"without its footer \(truncated at byte \d+ of \d+\) and what is left has no "
            r"message on '/LIDAR_TOP' \(preset key lidar\.topic\); no dataset written"),
    # 1 and 9: a new run destroyed the old one; tracebacks for ordinary mistakes.
    Case('relkd-train', 'new run in a run folder with checkpoints',
         lambda fx: ['--config', str(_train_config(fx)), *_fake_run(fx)],
         2, r'out_dir .*/run already holds a run \(last\.pt\); a new run there would replace '
            r'it: pass --resume to continue it, or choose another out_dir '
            r'\(--set out_dir=\.\.\.\)'),
    Case('relkd-train', 'binary config',
         lambda fx: ['--config', str(_file(fx.root / 'train.yaml', b'\x80\x04\x95\x00'))],
         2, r'.*/train\.yaml: not a YAML text file \(not UTF-8: byte 0 is 0x80\)'),
    Case('relkd-train', 'learning rate NaN',
         lambda fx: ['--config', str(_train_config(fx)), '--set', 'optim.lr=.nan'],
         2, r".*/train\.yaml with overrides \['optim\.lr=\.nan'\]: optim\.lr: expected float, "
            r"got float nan; NaN and infinity are not allowed"),
    Case('relkd-train', 'out_dir is a file',
         lambda fx: ['--config', str(_train_config(fx, out_dir=str(_file(fx.root / 'run'))))],
         2, r'out_dir .*/run is a file, but a train-run is a folder; choose a new path'),
    Case('relkd-train', 'resume from an empty last.pt',
         lambda fx: ['--config', str(_train_config(fx)), '--resume', *_fake_run(fx)],
         1, r'.*/run/last\.pt: the file is empty \(0 bytes\), not a relkd checkpoint; was it '
            r'written or copied completely\?'),
    # 9: eval failed on --out after 89 s of work, and on a damaged .npy with a traceback.
    Case('relkd-eval', 'out is a file',
         lambda fx: ['--checkpoint', str(fx.student), '--data', str(fx.prepared), '--protocol',
                     'zero-shot', '--out', str(_file(fx.root / 'report'))],
         2, r'--out .*/report is a file, but an eval-report is a folder; choose a new path'),
    Case('relkd-eval', 'damaged shard file',
         lambda fx: ['--checkpoint', str(fx.student), '--data', str(_damaged_dataset(fx)),
                     '--protocol', 'zero-shot', '--out', str(fx.root / 'report')],
         1, r'.*/damaged/shards/000000/points\.npy: damaged prepared file \(.*\); prepare the '
            r'dataset again into a new folder'),
]


@pytest.fixture(scope='module')
def sources(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('sources')
    record_drive(SyntheticDrive(RIGS['nuscenes'], 2, seed=5, cameras=False), root / 'drive')
    write_tiny_checkpoint(root / 'student.pt')
    dataset = PreparedDataset(tiny_prepared)
    assert dataset.teacher_id is not None
    config = StudentConfig(variant='14', width_multiplier=0.125, out_dim=8, voxel_size_m=0.5)
    text = torch.nn.functional.normalize(torch.randn(16, dataset.feature_dim), dim=1)
    save_checkpoint(root / 'eval_student.pt', StudentCheckpoint(
        student_config=config, teacher_dim=dataset.feature_dim,
        teacher=TeacherRef(name='synthetic', config=None, id=dataset.teacher_id),
        state_dict=DistilledStudent(config, dataset.feature_dim).state_dict(),
        text_embeddings=text, step=1))
    return {'drive': root / 'drive', 'student.pt': root / 'student.pt',
            'eval_student.pt': root / 'eval_student.pt'}


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob('*'))}


@pytest.mark.parametrize('case', CASES, ids=[f'{c.command} {c.mistake}' for c in CASES])
def test_cli_failure(case: Case, sources: dict[str, Path], tiny_prepared: Path, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(sources['drive'], tmp_path / 'drive')
    shutil.copy(sources['student.pt'], tmp_path / 'student.pt')
    torch.save({'format': 'relkd-checkpoint/1', 'state_dict': _RunsCode()}, tmp_path / 'evil.pt')
    fx = Fixtures(tmp_path, tmp_path / 'drive', tiny_prepared, tmp_path / 'student.pt',
                  sources['eval_student.pt'])
    argv = case.argv(fx)
    before = _snapshot(tmp_path)
    assert MAINS[case.command](argv) == case.code
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    errors = [line for line in err.splitlines() if line.startswith(f'{case.command}: error: ')]
    assert len(errors) == 1, err
    assert re.fullmatch(case.message, errors[0].removeprefix(f'{case.command}: error: ')), \
        errors[0]
    assert _snapshot(tmp_path) == before  # nothing deleted, replaced or left behind
