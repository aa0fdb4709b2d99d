"""The distilled student and its one-file checkpoint."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from relkd_core.data.scan import ScanInput
from relkd_core.errors import CheckpointError
from relkd_core.models import StudentConfig, voxelize_batch
from relkd_core.models.distilled import (
    DistilledStudent,
    StudentCheckpoint,
    load_checkpoint,
    save_checkpoint,
    scan_features,
)

CONFIG = StudentConfig(variant='14', width_multiplier=0.125, out_dim=8, voxel_size_m=0.5,
                       voxelization='cartesian')


def _scan(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(300, 4, generator=generator)
    points[:, :3] = points[:, :3] * 20 - 10
    return points


def _checkpoint(model: DistilledStudent, **extra: object) -> StudentCheckpoint:
    return StudentCheckpoint(student_config=CONFIG, teacher_id='synthetic-abc', teacher_dim=12,
                             state_dict=model.state_dict(),
                             vocabulary={'names': ['car', 'road'], 'prompts': [['car'], ['road']],
                                         'labels': [4, 11]},
                             text_embeddings=torch.eye(2, 12), step=7,
                             **extra)  # type: ignore[arg-type]


def test_distilled_student_projects_selected_points_to_teacher_dim() -> None:
    torch.manual_seed(0)
    model = DistilledStudent(CONFIG, teacher_dim=12).eval()
    batch = voxelize_batch([_scan()], CONFIG)
    every = model(batch)
    some = model(batch, torch.tensor([5, 0, 299]))
    assert every.shape == (300, 12)
    assert torch.allclose(some, every[[5, 0, 299]], atol=1e-6)


def test_scan_features_are_unit_rows_of_each_scan_in_order() -> None:
    torch.manual_seed(0)
    model = DistilledStudent(CONFIG, teacher_dim=12).eval()
    first, empty, second = scan_features(model, [_scan(0), torch.zeros((0, 4)), _scan(1)])
    assert first.shape == (300, 12) and empty.shape == (0, 12) and second.shape == (300, 12)
    assert torch.allclose(first.norm(dim=1), torch.ones(300), atol=1e-5)
    alone = model(voxelize_batch([_scan(1)], CONFIG))
    assert torch.allclose(second, torch.nn.functional.normalize(alone, dim=1), atol=1e-5)
    assert not second.requires_grad and scan_features(model, []) == []


def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DistilledStudent(CONFIG, teacher_dim=12).eval()
    save_checkpoint(tmp_path / 'a.pt', _checkpoint(model, run_config={'steps': 7},
                                                   training={'world_size': 1}))
    loaded = load_checkpoint(tmp_path / 'a.pt')
    assert loaded.student_config == CONFIG
    assert loaded.teacher_id == 'synthetic-abc' and loaded.step == 7
    assert loaded.vocabulary is not None and loaded.vocabulary['labels'] == [4, 11]
    assert loaded.run_config == {'steps': 7} and loaded.training == {'world_size': 1}
    assert loaded.text_embeddings is not None and torch.equal(loaded.text_embeddings,
                                                              torch.eye(2, 12))
    rebuilt = loaded.build_model()
    batch = voxelize_batch([_scan(1)], CONFIG)
    assert torch.equal(rebuilt(batch), model(batch))
    assert not rebuilt.training


def test_checkpoint_records_scan_input_and_taxonomy(tmp_path: Path) -> None:
    model = DistilledStudent(CONFIG, teacher_dim=12)
    scan_input = ScanInput(intensity_field='i', intensity_scale=1 / 255, min_range_m=2.5,
                           max_range_m=80.0)
    save_checkpoint(tmp_path / 'a.pt', _checkpoint(model, scan_input=scan_input,
                                                   taxonomy='semantickitti19'))
    loaded = load_checkpoint(tmp_path / 'a.pt')
    assert loaded.scan_input == scan_input and loaded.taxonomy == 'semantickitti19'
    assert torch.load(tmp_path / 'a.pt', weights_only=True)['format'] == 'relkd-checkpoint/2'


def test_load_checkpoint_reads_format_1_with_a_warning(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    model = DistilledStudent(CONFIG, teacher_dim=12)
    save_checkpoint(tmp_path / 'a.pt', _checkpoint(model, scan_input=ScanInput()))
    payload = torch.load(tmp_path / 'a.pt', weights_only=True)
    payload['format'] = 'relkd-checkpoint/1'
    del payload['scan_input'], payload['taxonomy']
    torch.save(payload, tmp_path / 'old.pt')
    loaded = load_checkpoint(tmp_path / 'old.pt')
    assert loaded.scan_input is None and loaded.taxonomy is None and loaded.step == 7
    assert 'old.pt: a relkd-checkpoint/1 checkpoint, written before checkpoints recorded how ' \
           'scans were read' in caplog.text


def test_load_checkpoint_names_an_invalid_scan_input(tmp_path: Path) -> None:
    model = DistilledStudent(CONFIG, teacher_dim=12)
    save_checkpoint(tmp_path / 'a.pt', _checkpoint(model))
    payload = torch.load(tmp_path / 'a.pt', weights_only=True)
    payload['scan_input'] = '{"intensity_field": "i"}'
    torch.save(payload, tmp_path / 'a.pt')
    with pytest.raises(CheckpointError, match=r"a.pt: stored scan_input is invalid \(KeyError: "
                                              r"'intensity_scale'\); expected intensity_field"):
        load_checkpoint(tmp_path / 'a.pt')


class _RunsCode:
    """Pickles as a call of os.system: what a malicious checkpoint holds."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ('echo this must never run',))


def _torchscript(path: Path) -> None:
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))


@pytest.mark.parametrize(('write', 'message'), [
    (lambda p: None, r'no such checkpoint file$'),
    (lambda p: p.write_bytes(b''), r'the file is empty \(0 bytes\), not a relkd checkpoint; was '
                                   r'it written or copied completely\?$'),
    (lambda p: p.write_bytes(b'not a zip'), r"not a relkd checkpoint \(a torch.save zip archive "
                                            r"was expected; the file starts with b'not '\)$"),
    (lambda p: pickle.dump({'format': 'relkd-checkpoint/1'}, p.open('wb')),
     r'not a relkd checkpoint \(a torch.save zip archive was expected'),
    (lambda p: torch.save({'state_dict': _RunsCode()}, p),
     r'refused: it holds objects other than tensors, numbers and strings \(.*GLOBAL '
     r'posix.system.*\); relkd never runs code stored in a file$'),
    (_torchscript, r'a TorchScript file \(what relkd-export writes\), not a relkd checkpoint'),
    (lambda p: torch.save({'format': 'other'}, p), "expected format 'relkd-checkpoint/2'"),
    (lambda p: torch.save({'format': 'relkd-checkpoint/1'}, p), 'checkpoint lacks'),
], ids=['missing', 'empty', 'text', 'pickle', 'runs-code', 'torchscript', 'foreign-format',
        'incomplete'])
def test_load_checkpoint_rejects_bad_files(tmp_path: Path, write, message: str  # type: ignore[no-untyped-def]
                                           ) -> None:
    path = tmp_path / 'x.pt'
    write(path)
    with pytest.raises(CheckpointError, match=f'^{re.escape(str(path))}: {message}') as error:
        load_checkpoint(path)
    # One line, and never torch's advice to load the file with weights_only=False.
    assert '\n' not in str(error.value) and 'weights_only' not in str(error.value)


def test_load_checkpoint_rejects_truncated_file(tmp_path: Path) -> None:
    model = DistilledStudent(CONFIG, teacher_dim=12)
    save_checkpoint(tmp_path / 'a.pt', _checkpoint(model))
    data = (tmp_path / 'a.pt').read_bytes()
    (tmp_path / 'a.pt').write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r'a.pt: damaged or truncated checkpoint \(its zip '
                                              r'directory cannot be read'):
        load_checkpoint(tmp_path / 'a.pt')


def test_checkpoint_weights_must_fit_their_config(tmp_path: Path) -> None:
    model = DistilledStudent(CONFIG, teacher_dim=12)
    checkpoint = _checkpoint(model)
    state = dict(checkpoint.state_dict)
    state['head.weight'] = torch.zeros(3, 3)
    broken = StudentCheckpoint(student_config=CONFIG, teacher_id='t', teacher_dim=12,
                               state_dict=state)
    with pytest.raises(CheckpointError, match='do not fit'):
        broken.build_model()
