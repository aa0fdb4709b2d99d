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
    TeacherRef,
    load_checkpoint,
    save_checkpoint,
    scan_features,
)
from relkd_core.teachers.vocabulary import Vocabulary

VOCABULARY = Vocabulary(names=('car', 'road'), prompts=(('car',), ('road',)), labels=(4, 11))
TEACHER = TeacherRef(name='synthetic', config=None, id='synthetic-abc')
CONFIG = StudentConfig(variant='14', width_multiplier=0.125, out_dim=8, voxel_size_m=0.5,
                       voxelization='cartesian')


def _scan(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(300, 4, generator=generator)
    points[:, :3] = points[:, :3] * 20 - 10
    return points


def _checkpoint(model: DistilledStudent, **extra: object) -> StudentCheckpoint:
    return StudentCheckpoint(student_config=CONFIG, teacher=TEACHER, teacher_dim=12,
                             state_dict=model.state_dict(),
                             vocabulary=VOCABULARY,
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
    assert loaded.teacher == TEACHER
    assert loaded.vocabulary == VOCABULARY
    assert loaded.vocabulary.labels == (4, 11)
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
    assert torch.load(tmp_path / 'a.pt', weights_only=True)['format'] == 'relkd-checkpoint/3'


def _older(tmp_path: Path, found: str, run_config: dict[str, object], drop: tuple[str, ...]
           ) -> Path:
    """A checkpoint as an older format wrote it: without the keys ``drop``, the vocabulary as
    the JSON dict it was, the run config relkd-train wrote."""
    model = DistilledStudent(CONFIG, teacher_dim=12)
    scan_input = ScanInput(intensity_field='i', min_range_m=2.5, max_range_m=80.0)
    save_checkpoint(tmp_path / 'a.pt', _checkpoint(model, scan_input=scan_input,
                                                   run_config=run_config))
    payload = torch.load(tmp_path / 'a.pt', weights_only=True)
    payload['format'] = found
    payload['scan_input'] = ('{"intensity_field": "i", "intensity_scale": 1.0, '
                             '"min_range_m": 2.5, "max_range_m": 80.0}')
    for key in ('teacher', *drop):
        del payload[key]
    torch.save(payload, tmp_path / 'old.pt')
    return tmp_path / 'old.pt'


RUN_CONFIG = {'data': {'teacher': 'synthetic', 'teacher_config': 'config/teachers/x.yaml'}}


def test_load_checkpoint_upgrades_format_2(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    loaded = load_checkpoint(_older(tmp_path, 'relkd-checkpoint/2', RUN_CONFIG, ()))
    assert loaded.teacher == TeacherRef(name='synthetic', config='config/teachers/x.yaml',
                                        id='synthetic-abc')
    assert loaded.vocabulary == VOCABULARY
    # Format 2 recorded no NaN policy: training always dropped non-finite points.
    assert loaded.scan_input == ScanInput(intensity_field='i', min_range_m=2.5,
                                          max_range_m=80.0, nan_policy='drop')
    assert 'old.pt: a relkd-checkpoint/2 checkpoint, upgraded on reading to ' \
           'relkd-checkpoint/3 (teacher synthetic from its run config)' in caplog.text


def test_load_checkpoint_reads_format_1_with_a_warning(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    loaded = load_checkpoint(_older(tmp_path, 'relkd-checkpoint/1', RUN_CONFIG,
                                    ('scan_input', 'taxonomy')))
    assert loaded.scan_input is None and loaded.taxonomy is None and loaded.step == 7
    assert loaded.teacher.name == 'synthetic'
    assert 'it does not record how scans were read nor the taxonomy' in caplog.text


@pytest.mark.parametrize('found', ['relkd-checkpoint/1', 'relkd-checkpoint/2'])
def test_load_checkpoint_refuses_an_old_checkpoint_without_its_teacher(tmp_path: Path,
                                                                       found: str) -> None:
    with pytest.raises(CheckpointError, match=rf'old.pt: a {found} checkpoint without run_config '
                                              r'data.teacher cannot be upgraded to '
                                              r'relkd-checkpoint/3 \(the teacher\'s name is '
                                              r'missing\)'):
        load_checkpoint(_older(tmp_path, found, {'steps': 7}, ()))


@pytest.mark.parametrize('key', ['teacher', 'vocabulary', 'scan_input'])
def test_load_checkpoint_names_a_missing_field_of_format_3(tmp_path: Path, key: str) -> None:
    model = DistilledStudent(CONFIG, teacher_dim=12)
    save_checkpoint(tmp_path / 'a.pt', _checkpoint(model))
    payload = torch.load(tmp_path / 'a.pt', weights_only=True)
    del payload[key]
    torch.save(payload, tmp_path / 'a.pt')
    with pytest.raises(CheckpointError, match=rf"a.pt: checkpoint lacks \['{key}'\]$"):
        load_checkpoint(tmp_path / 'a.pt')


@pytest.mark.parametrize(('key', 'value', 'message'), [
    ('teacher', '{"name": "synthetic"}', r"stored teacher is invalid \(KeyError: 'config'\)"),
    ('teacher', '{"name": "synthetic", "config": null, "id": "other"}',
     r"the stored teacher has id 'other' but teacher_id is 'synthetic-abc'"),
    ('vocabulary', '{"names": ["car"], "prompts": [], "labels": [1]}',
     r'stored vocabulary is invalid \(TeacherError: vocabulary: names, prompts and labels'),
    ('scan_input', '{"intensity_field": "i", "intensity_scale": 1, "min_range_m": 0, '
                   '"max_range_m": 9, "nan_policy": "zero"}',
     r"stored scan_input is invalid \(ConfigError: nan_policy: expected one of \['drop', "
     r"'keep'\], got 'zero'\)"),
])
def test_load_checkpoint_names_an_invalid_contract_field(tmp_path: Path, key: str, value: str,
                                                         message: str) -> None:
    model = DistilledStudent(CONFIG, teacher_dim=12)
    save_checkpoint(tmp_path / 'a.pt', _checkpoint(model, scan_input=ScanInput()))
    payload = torch.load(tmp_path / 'a.pt', weights_only=True)
    payload[key] = value
    torch.save(payload, tmp_path / 'a.pt')
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / 'a.pt')


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
    (lambda p: torch.save({'format': 'other'}, p), "expected format 'relkd-checkpoint/3'"),
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
    broken = StudentCheckpoint(student_config=CONFIG, teacher=TEACHER, teacher_dim=12,
                               state_dict=state)
    with pytest.raises(CheckpointError, match='do not fit'):
        broken.build_model()
