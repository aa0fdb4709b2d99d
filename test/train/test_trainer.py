"""relkd_core.train.trainer without the CLI: the trainer on a tiny prepared dataset in one
process, its checks, its schedule and the checkpoint contract it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from relkd_core.config import config_from_dict
from relkd_core.data.prepared import PreparedDataset
from relkd_core.data.preset import load_preset
from relkd_core.errors import ConfigError, DataError
from relkd_core.models.distilled import TeacherRef, load_checkpoint
from relkd_core.teachers.vocabulary import Vocabulary
from relkd_core.train.config import TrainConfig
from relkd_core.train.distributed import DistContext
from relkd_core.train.trainer import StepReport, TextSide, Trainer, config_differences

CPU = DistContext(rank=0, world_size=1, device=torch.device('cpu'))


def _config(tmp_path: Path, prepared: Path, **top: object) -> TrainConfig:
    values: dict[str, object] = {
        'out_dir': str(tmp_path / 'run'), 'data': {'prepared': str(prepared)},
        'student': {'variant': '14', 'width_multiplier': 0.125, 'out_dim': 16,
                    'voxel_size_m': 0.4, 'voxelization': 'cartesian'},
        'loss': {'weights': {'similarity': 1.0}, 'pairs_per_batch': 128},
        'steps': 2, 'batch_size': 2, 'log_every': 1, 'checkpoint_every': 1, 'device': 'cpu'}
    values.update(top)
    return config_from_dict(TrainConfig, values, source='test')


def _teacher(prepared: Path) -> TeacherRef:
    dataset = PreparedDataset(prepared)
    assert dataset.teacher_id is not None
    return TeacherRef(name='synthetic', config=None, id=dataset.teacher_id)


def _text(dim: int) -> TextSide:
    vocabulary = Vocabulary.default()
    rows = torch.nn.functional.normalize(
        torch.randn(len(vocabulary), dim, generator=torch.Generator().manual_seed(0)), dim=1)
    return TextSide(vocabulary, rows)


def test_trainer_refuses_data_of_another_teacher(tiny_prepared: Path, tmp_path: Path) -> None:
    other = TeacherRef(name='synthetic', config=None, id='synthetic-000000000000')
    with pytest.raises(DataError, match=r"holds features of teacher 'synthetic-.*', but this run "
                                        r"distils 'synthetic-000000000000'"):
        Trainer(_config(tmp_path, tiny_prepared), CPU, tiny_prepared, other)


def test_trainer_refuses_text_of_another_width(tiny_prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"text embeddings are 7-d but the dataset's teacher "
                                          r"features are 384-d"):
        Trainer(_config(tmp_path, tiny_prepared), CPU, tiny_prepared, _teacher(tiny_prepared),
                _text(7))


def test_trainer_learning_rate_warms_up_then_follows_a_cosine(tiny_prepared: Path,
                                                              tmp_path: Path) -> None:
    config = _config(tmp_path, tiny_prepared, steps=12,
                     optim={'lr': 0.01, 'warmup_steps': 2, 'min_lr_ratio': 0.1})
    trainer = Trainer(config, CPU, tiny_prepared, _teacher(tiny_prepared))
    factors = [trainer._lr_factor(step) for step in (0, 1, 2, 7, 12, 20)]
    assert factors[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert factors[3] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factors[4:] == pytest.approx([0.1, 0.1])
    assert trainer.steps_per_epoch == 2 and trainer.num_frames == 3


def test_trainer_run_writes_the_checkpoint_contract(tiny_prepared: Path, tmp_path: Path
                                                    ) -> None:
    config = _config(tmp_path, tiny_prepared)
    teacher = _teacher(tiny_prepared)
    text = _text(384)
    trainer = Trainer(config, CPU, tiny_prepared, teacher, text)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    reports: list[StepReport] = []
    result = trainer.run(reports.append)
    assert (result.steps_done, result.interrupted) == (2, False)
    assert [r.step for r in reports] == [1, 2] and all(r.loss > 0 for r in reports)
    assert result.final_checkpoint == tmp_path / 'run' / 'student.pt'
    student = load_checkpoint(result.final_checkpoint)
    assert student.teacher == teacher and student.vocabulary == Vocabulary.default()
    assert torch.equal(student.text_embeddings, text.embeddings)
    # How the training scans were read: the synth-nuscenes preset the data was prepared with.
    assert student.scan_input == load_preset('synth-nuscenes').lidar.scan_input
    assert student.scan_input.nan_policy == 'drop' and student.taxonomy == 'nuscenes16'
    assert student.step == 2 and student.training is None
    changed = [k for k, v in student.state_dict.items() if not torch.equal(v, initial[k])]
    assert 'head.weight' in changed
    records = [json.loads(line) for line in
               (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [1, 2]
    assert records[0]['loss'] == pytest.approx(reports[0].loss)


@pytest.mark.slow
def test_trainer_run_stops_with_a_resumable_checkpoint(tiny_prepared: Path, tmp_path: Path
                                                       ) -> None:
    config = _config(tmp_path, tiny_prepared, steps=5, checkpoint_every=10)
    trainer = Trainer(config, CPU, tiny_prepared, _teacher(tiny_prepared))
    result = trainer.run(should_stop=lambda: True)
    assert (result.steps_done, result.interrupted, result.final_checkpoint) == (1, True, None)
    assert result.last_checkpoint is not None
    last = load_checkpoint(result.last_checkpoint)
    assert last.step == 1 and last.training is not None and last.vocabulary is None
    resumed = Trainer(config, CPU, tiny_prepared, _teacher(tiny_prepared), resume=last)
    assert resumed.step == 1
    assert torch.equal(resumed.model.state_dict()['head.weight'], last.state_dict['head.weight'])


def test_config_differences_names_dotted_keys() -> None:
    old = {'steps': 2, 'loss': {'weights': {'a': 1.0}, 'tau': 0.07}, 'seed': 0}
    new = {'steps': 3, 'loss': {'weights': {'a': 2.0}, 'tau': 0.07}, 'extra': 1}
    assert config_differences(old, new) == ['extra', 'loss.weights', 'seed', 'steps']
