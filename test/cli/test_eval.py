"""relkd-eval: the real main() per protocol on tiny data, its figures, and bad inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from relkd_core.cli.eval import main
from relkd_core.data.prepared import PreparedDataset
from relkd_core.eval.report import REPORT_KIND
from relkd_core.metrics import confusion_matrix, mean_iou
from relkd_core.models import StudentConfig
from relkd_core.models.distilled import (
    DistilledStudent,
    StudentCheckpoint,
    TeacherRef,
    save_checkpoint,
    scan_features,
)
from relkd_core.outputs import output_kind
from relkd_core.taxonomy import CLASS_NAMES
from relkd_core.teachers.evaluate import predict_labels
from relkd_core.teachers.vocabulary import Vocabulary

CONFIG = StudentConfig(variant='14', width_multiplier=0.125, out_dim=8, voxel_size_m=0.5,
                       voxelization='cartesian')


def _checkpoint(path: Path, teacher_id: str, teacher_dim: int, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = DistilledStudent(CONFIG, teacher_dim)
    vocabulary = Vocabulary.default()
    text = torch.nn.functional.normalize(torch.randn(len(vocabulary), teacher_dim), dim=1)
    save_checkpoint(path, StudentCheckpoint(
        student_config=CONFIG, teacher=TeacherRef(name='synthetic', config=None, id=teacher_id),
        teacher_dim=teacher_dim, state_dict=model.state_dict(), vocabulary=vocabulary,
        text_embeddings=text, run_config={'loss': {'weights': {'relational': 1.0}}}, step=3))
    return path


@pytest.fixture(scope='module')
def student(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dataset = PreparedDataset(tiny_prepared)
    assert dataset.teacher_id is not None
    return _checkpoint(tmp_path_factory.mktemp('ckpt') / 'student.pt', dataset.teacher_id,
                       dataset.feature_dim)


def _metrics(out: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((out / 'metrics.json').read_text())


@pytest.mark.slow
def test_eval_zero_shot_scores_match_a_direct_computation(tiny_prepared: Path, student: Path,
                                                          tmp_path: Path) -> None:
    assert main(['--checkpoint', str(student), '--data', str(tiny_prepared),
                 '--protocol', 'zero-shot', '--out', str(tmp_path)]) == 0
    metrics = _metrics(tmp_path)
    checkpoint = torch.load(student, weights_only=True)
    model = DistilledStudent(CONFIG, checkpoint['teacher_dim'])
    model.load_state_dict(checkpoint['state_dict'])
    model.eval()
    text = checkpoint['text_embeddings'].numpy()
    vocabulary = Vocabulary.default()
    dataset = PreparedDataset(tiny_prepared)
    student_all = teacher_visible = 0
    for i in range(len(dataset)):
        frame = dataset[i]
        feats = scan_features(model, [torch.from_numpy(frame.points)])[0].numpy()
        predicted = predict_labels(feats, text, vocabulary)
        student_all = student_all + confusion_matrix(frame.labels, predicted)
        visible, first = np.unique(frame.pair_point, return_index=True)
        assert frame.pair_features is not None and frame.labels is not None
        teacher_visible = teacher_visible + confusion_matrix(
            frame.labels[visible], predict_labels(frame.pair_features[first], text, vocabulary))
    assert metrics['miou'] == pytest.approx(100 * mean_iou(student_all), abs=0.01)
    assert metrics['teacher_miou'] == pytest.approx(100 * mean_iou(teacher_visible), abs=0.01)
    assert metrics['protocol'] == 'zero-shot' and set(metrics['per_class_iou']) == set(CLASS_NAMES)
    assert metrics['checkpoint']['sha256'] == hashlib.sha256(student.read_bytes()).hexdigest()
    assert metrics['data']['frames'] == len(dataset)
    assert 0.0 <= metrics['gap']['cka'] <= 1.0 and metrics['gap']['relational_gap'] > 0
    for name in ('report.md', 'report.html', 'per_class_iou.png', 'confusion.png', 'bev.png'):
        assert (tmp_path / name).stat().st_size > 0
    assert 'teacher, visible points' in (tmp_path / 'report.md').read_text()


@pytest.mark.slow
@pytest.mark.parametrize('protocol', ['linear-probe', 'finetune'])
def test_eval_few_shot_leaves_labelled_scans_out(tiny_prepared: Path, student: Path,
                                                 tmp_path: Path, protocol: str) -> None:
    assert main(['--checkpoint', str(student), '--data', str(tiny_prepared), '--protocol',
                 protocol, '--label-fraction', '0.34', '--finetune-steps', '2',
                 '--probe-epochs', '20', '--out', str(tmp_path)]) == 0
    metrics = _metrics(tmp_path)
    frames = len(PreparedDataset(tiny_prepared))
    assert len(metrics['labelled_scans']) == 1 and metrics['evaluated_scans'] == frames - 1
    assert 0.0 <= metrics['miou'] <= 100.0 and metrics['protocol'] == protocol


@pytest.mark.slow
def test_eval_gap_of_several_runs_writes_the_scatter(tiny_prepared: Path, student: Path,
                                                     tmp_path: Path) -> None:
    dataset = PreparedDataset(tiny_prepared)
    other = _checkpoint(tmp_path / 'other.pt', str(dataset.teacher_id), dataset.feature_dim, 1)
    third = _checkpoint(tmp_path / 'third.pt', str(dataset.teacher_id), dataset.feature_dim, 2)
    assert main(['--checkpoint', str(student), str(other), str(third), '--data',
                 str(tiny_prepared), '--protocol', 'gap', '--max-gap-pairs', '500',
                 '--out', str(tmp_path / 'out')]) == 0
    metrics = _metrics(tmp_path / 'out')
    assert [r['gap']['num_pairs'] for r in metrics['runs']] == [500, 500, 500]
    assert len({r['gap']['relational_gap'] for r in metrics['runs']}) == 3
    assert -1.0 <= metrics['gap_miou_pearson'] <= 1.0
    assert (tmp_path / 'out' / 'gap_vs_miou.png').stat().st_size > 0


def test_eval_refuses_checkpoint_of_another_teacher_dimension(
        tiny_prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = _checkpoint(tmp_path / 'wrong.pt', 'openclip-abc', 512)
    assert main(['--checkpoint', str(wrong), '--data', str(tiny_prepared), '--protocol',
                 'zero-shot', '--out', str(tmp_path / 'out')]) == 1
    assert 'projects to 512-d' in capsys.readouterr().err


def test_eval_refuses_vocabulary_names_outside_the_taxonomy(
        tiny_prepared: Path, student: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(['--checkpoint', str(student), '--data', str(tiny_prepared), '--protocol',
                 'zero-shot', '--vocabulary', 'car,flying saucer', '--out', str(tmp_path)])
    assert code == 1
    assert "closed-set evaluation needs every vocabulary entry" in capsys.readouterr().err


def test_eval_refuses_an_empty_dataset(tiny_prepared: Path, student: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((tiny_prepared / 'manifest.json').read_text())
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'manifest.json').write_text(json.dumps({**manifest, 'shards': []}))
    assert main(['--checkpoint', str(student), '--data', str(empty), '--protocol',
                 'zero-shot', '--out', str(tmp_path / 'out')]) == 1
    assert 'holds no frames' in capsys.readouterr().err


@pytest.mark.parametrize(('argv', 'message'), [
    (['--protocol', 'zero-shot', '--checkpoint', 'missing.pt'], 'no such file'),
    (['--protocol', 'linear-probe', '--label-fraction', '0'], r'must be in (0, 1]'),
    (['--protocol', 'nonsense'], 'invalid choice'),
])
def test_eval_bad_usage_exits_2(tiny_prepared: Path, student: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str], argv: list[str],
                                message: str) -> None:
    base = ['--data', str(tiny_prepared), '--out', str(tmp_path)]
    if '--checkpoint' not in argv:
        base += ['--checkpoint', str(student)]
    try:
        code = main(base + argv)
    except SystemExit as exit_:  # argparse exits by itself
        code = int(exit_.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_eval_overwrite_replaces_only_a_report_it_wrote(
        tiny_prepared: Path, student: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'out'
    out.mkdir()  # a report written before reports were marked, with a plot of another run
    (out / 'metrics.json').write_text('{}')
    (out / 'report.md').write_text('old')
    (out / 'gap_vs_miou.png').write_bytes(b'old')
    argv = ['--checkpoint', str(student), '--data', str(tiny_prepared), '--protocol', 'gap',
            '--max-gap-pairs', '64', '--out', str(out)]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f'relkd-eval: error: --out {out} already exists (an eval-report); choose a new path or '
        'pass --overwrite')
    assert main([*argv, '--overwrite']) == 0
    assert output_kind(out) == REPORT_KIND
    assert not (out / 'gap_vs_miou.png').exists()  # the old report went as a whole
    assert _metrics(out)['gap']['num_pairs'] == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_eval_vocabulary_names_resolve_in_the_data_taxonomy() -> None:
    from relkd_core.cli.eval import parse_vocabulary
    from relkd_core.taxonomy import load_taxonomy

    kitti = parse_vocabulary('car, parking,driveable_surface', load_taxonomy('semantickitti19'))
    assert kitti is not None and kitti.labels == (1, 10, 0)
    nuscenes = parse_vocabulary('car,driveable_surface')
    assert nuscenes is not None and nuscenes.labels == (4, 11)
