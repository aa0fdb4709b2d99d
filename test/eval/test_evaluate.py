"""relkd_core.eval.evaluate follows the data's taxonomy: SemanticKITTI's 19 classes are the
zero-shot vocabulary and the report's rows on SemanticKITTI data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from infer.checkpoints import TEACHER_DIM, TEACHER_ID, FakeTextEncoder, write_tiny_checkpoint

from relkd_core.data.prepare import prepare_dataset
from relkd_core.data.preset import load_preset
from relkd_core.datasets import write_scene_bag
from relkd_core.datasets.semantickitti import SemanticKitti
from relkd_core.errors import ConfigError
from relkd_core.eval import evaluate as evaluate_module
from relkd_core.eval.evaluate import EvalConfig, dataset_taxonomy, evaluate
from relkd_core.eval.report import write_report
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.native import write_semantickitti
from relkd_core.sim.rig import RIGS
from relkd_core.taxonomy import load_taxonomy
from relkd_core.teachers.vocabulary import Vocabulary


@pytest.fixture(scope='module')
def kitti_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sparse 3-scan lidar-only drive written as SemanticKITTI, converted and prepared with
    the semantickitti-lidar preset."""
    folder = tmp_path_factory.mktemp('kitti_eval')
    rig = RIGS['kitti']
    rig = dataclasses.replace(rig, lidar=dataclasses.replace(rig.lidar, azimuth_steps=100))
    write_semantickitti(SyntheticDrive(rig, 3, 2, cameras=False), folder / 'kitti')
    write_scene_bag(SemanticKitti(folder / 'kitti').sequence('00'), folder / 'bag')
    prepare_dataset([folder / 'bag'], load_preset('semantickitti-lidar'), folder / 'prepared')
    return folder / 'prepared'


@pytest.fixture
def fake_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate_module, 'teacher_text_encoder',
                        lambda checkpoint: FakeTextEncoder(TEACHER_ID, TEACHER_DIM))


def test_evaluate_zero_shot_uses_the_data_taxonomy(kitti_prepared: Path, tmp_path: Path,
                                                   fake_text: None) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / 'student.pt')
    result = evaluate(checkpoint, kitti_prepared, EvalConfig(protocol='zero-shot'))
    names = load_taxonomy('semantickitti19').names
    assert result.metrics['data']['taxonomy'] == 'semantickitti19'
    assert tuple(result.metrics['vocabulary']) == names
    assert tuple(result.metrics['per_class_iou']) == names
    assert result.confusion.shape == (20, 20)
    assert result.metrics['per_class_iou']['road'] is not None  # road is in the drive
    report = write_report(tmp_path / 'report', [result]).read_text()
    assert '| traffic-sign |' in report and 'driveable_surface' not in report


def test_evaluate_refuses_a_vocabulary_of_another_taxonomy(kitti_prepared: Path,
                                                           tmp_path: Path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / 'student.pt')
    vocabulary = Vocabulary.from_names(['car', 'driveable_surface'],
                                       load_taxonomy('semantickitti19'))
    with pytest.raises(ConfigError, match=r"\['driveable_surface'\] do not .*taxonomy names: "
                                          r"\['car', 'bicycle'"):
        evaluate(checkpoint, kitti_prepared, EvalConfig(protocol='zero-shot',
                                                        vocabulary=vocabulary))


def test_evaluate_dataset_taxonomy_of_a_folder(kitti_prepared: Path, tmp_path: Path) -> None:
    assert dataset_taxonomy(kitti_prepared).name == 'semantickitti19'
    assert dataset_taxonomy(tmp_path).name == 'nuscenes16'  # no manifest: opening reports it
