"""TorchScript export: the scripted student computes what the eager one does, with no relkd."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch

from relkd_core.cli.export import main as export_main
from relkd_core.errors import ModelError
from relkd_core.models import StudentConfig, build_student, voxelize_batch
from relkd_core.models.distilled import (
    DistilledStudent,
    StudentCheckpoint,
    TeacherRef,
    save_checkpoint,
    scan_features,
)
from relkd_core.models.export import export_checkpoint, read_export_metadata, script_student
from relkd_core.models.minkunet import MinkUNet
from relkd_core.teachers.vocabulary import Vocabulary

ConfigFactory = Callable[..., StudentConfig]
ScanFactory = Callable[..., torch.Tensor]


Model = TypeVar("Model", bound=torch.nn.Module)


def _with_running_statistics(model: Model) -> Model:
    """Batch norms with non-trivial statistics and affine parameters, so folding is tested."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            size = module.num_features
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"voxelization": "cartesian", "stem_kernel_size": 5, "input_features": "xyzi"},
    {"voxelization": "cylindrical", "voxel_size_m": 0.3, "variant": "18"},
    {"input_features": "ones", "normalize_output": False},
])
def test_scripted_student_matches_the_eager_model(overrides: dict[str, object],
                                                  make_config: ConfigFactory,
                                                  make_scan: ScanFactory) -> None:
    config = make_config(**overrides)
    model = _with_running_statistics(build_student(config))
    scripted = script_student(model)
    for seed, size in ((0, 3000), (1, 700)):  # two scans: nothing of the first is baked in
        scan = make_scan(size, seed=seed)
        with torch.no_grad():
            reference = model(voxelize_batch([scan], config))
        out = scripted(scan)
        assert out.shape == (size, config.out_dim)
        torch.testing.assert_close(out, reference, atol=2e-5, rtol=1e-4)


def test_scripted_head_gives_unit_teacher_space_rows(make_config: ConfigFactory,
                                                     make_scan: ScanFactory) -> None:
    config = make_config()
    student = DistilledStudent(config, teacher_dim=12)
    _with_running_statistics(student)
    scan = make_scan(2000)
    with torch.no_grad():
        reference = torch.nn.functional.normalize(student(voxelize_batch([scan], config)), dim=1)
    out = script_student(student.backbone, student.head)(scan)
    torch.testing.assert_close(out, reference, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(len(scan)))


def test_scripted_student_handles_empty_and_bad_scans(make_config: ConfigFactory,
                                                      make_scan: ScanFactory) -> None:
    scripted = script_student(_with_running_statistics(build_student(make_config())))
    assert scripted(torch.zeros((0, 4))).shape == (0, 8)
    assert scripted(make_scan(1)).shape == (1, 8)
    bad = make_scan(10)
    bad[3, 1] = float("nan")
    with pytest.raises(torch.jit.Error, match="NaN or infinite"):
        scripted(bad)
    with pytest.raises(torch.jit.Error, match=r"must be \(N, 4\) float32"):
        scripted(torch.zeros((5, 3)))
    with pytest.raises(torch.jit.Error, match=r"must be \(N, 4\) float32"):
        scripted(torch.zeros((5, 4), dtype=torch.float64))
    with pytest.raises(ModelError, match="expects a MinkUNet"):
        script_student(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def _checkpoint_file(path: Path, config: StudentConfig) -> tuple[Path, DistilledStudent]:
    student = _with_running_statistics(DistilledStudent(config, teacher_dim=12))
    assert isinstance(student.backbone, MinkUNet)
    checkpoint = StudentCheckpoint(
        student_config=config, teacher_dim=12, state_dict=student.state_dict(),
        teacher=TeacherRef(name="synthetic", config=None, id="synthetic-abc"),
        vocabulary=Vocabulary(names=("car", "road"), prompts=(("car",), ("road",)),
                              labels=(4, 11)),
        text_embeddings=torch.eye(2, 12), step=7)
    save_checkpoint(path, checkpoint)
    return path, student


@pytest.mark.slow
def test_relkd_export_writes_a_file_that_runs_without_relkd(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make_config: ConfigFactory,
        make_scan: ScanFactory) -> None:
    checkpoint, student = _checkpoint_file(tmp_path / "student.pt", make_config())
    out = tmp_path / "student.torchscript"
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(out),
                        "--check-points", "3000"]) == 0
    printed = capsys.readouterr().out
    assert "-> (N, 12) features" in printed
    difference = float(printed.split("eager model is ")[1].split()[0])
    assert difference < 1e-4
    assert f"{difference:.2e} and 100.00 % of its points keep the float32 label" in printed
    meta = read_export_metadata(out)
    assert meta["format"] == "relkd-torchscript/1" and meta["features"] == "teacher"
    assert meta["teacher_id"] == "synthetic-abc" and meta["vocabulary"] == ["car", "road"]
    torch.testing.assert_close(torch.tensor(meta["text_embeddings"]), torch.eye(2, 12))
    assert meta["student_config"]["variant"] == "14"
    # A fresh interpreter that never imports relkd: only torch and the file.
    scan = make_scan(1500, seed=3)
    torch.save(scan, tmp_path / "scan.pt")
    script = (
        "import sys, torch\n"
        f"module = torch.jit.load({str(out)!r})\n"
        f"features = module(torch.load({str(tmp_path / 'scan.pt')!r}))\n"
        f"torch.save(features, {str(tmp_path / 'features.pt')!r})\n"
        "assert not any(name.startswith('relkd') for name in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-I", "-c", script], check=True, timeout=120)
    with torch.no_grad():
        reference = torch.nn.functional.normalize(
            student(voxelize_batch([scan], student.config)), dim=1)
    torch.testing.assert_close(torch.load(tmp_path / "features.pt"), reference, atol=2e-5,
                               rtol=1e-4)


@pytest.mark.slow
def test_relkd_export_backbone_only_and_refusals(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make_config: ConfigFactory,
        make_scan: ScanFactory) -> None:
    checkpoint, _ = _checkpoint_file(tmp_path / "student.pt", make_config())
    out = tmp_path / "backbone.torchscript"
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(out), "--backbone-only",
                        "--check-points", "500"]) == 0
    assert read_export_metadata(out)["features"] == "backbone"
    assert torch.jit.load(str(out))(make_scan(400)).shape == (400, 8)
    capsys.readouterr()
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert "already exists (a torchscript-export); choose a new path or pass --overwrite" in \
        capsys.readouterr().err
    # The checkpoint itself, or any file relkd-export did not write, is never replaced.
    original = checkpoint.read_bytes()
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(checkpoint),
                        "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
    copy = tmp_path / "copy.pt"
    copy.write_bytes(original)
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(copy),
                        "--overwrite"]) == 2
    assert "already exists and is not a torchscript-export" in capsys.readouterr().err
    assert checkpoint.read_bytes() == original and copy.read_bytes() == original
    assert export_main(["--checkpoint", str(tmp_path / "missing.pt"),
                        "--out", str(tmp_path / "x.torchscript")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.torchscript").exists()


@pytest.mark.slow
def test_bfloat16_export_keeps_the_float32_labels(tmp_path: Path, make_config: ConfigFactory,
                                                  make_scan: ScanFactory) -> None:
    config = make_config(width_multiplier=0.25)
    student = _with_running_statistics(DistilledStudent(config, teacher_dim=48))
    generator = torch.Generator().manual_seed(5)
    text = torch.nn.functional.normalize(torch.randn(8, 48, generator=generator), dim=1)
    names = tuple(f"class{i}" for i in range(8))
    checkpoint = StudentCheckpoint(
        student_config=config, teacher_dim=48, state_dict=student.state_dict(),
        teacher=TeacherRef(name="synthetic", config=None, id="synthetic-abc"),
        vocabulary=Vocabulary(names=names, prompts=tuple((n,) for n in names),
                              labels=tuple(range(8))),
        text_embeddings=text, step=1)
    report = export_checkpoint(checkpoint, tmp_path / "bf16.torchscript", check_points=2000,
                               precision="bfloat16")
    assert report.precision == "bfloat16"
    assert report.label_agreement is not None and report.label_agreement >= 0.995
    # bfloat16 arithmetic shows in the features (a float32 export agrees to 1e-4).
    assert 1e-4 < report.max_abs_difference < 0.1
    meta = read_export_metadata(tmp_path / "bf16.torchscript")
    assert meta["precision"] == "bfloat16"
    module = torch.jit.load(str(tmp_path / "bf16.torchscript"))
    assert module.stem.weight.dtype == torch.bfloat16
    assert module.head.weight.dtype == torch.float32
    scan = make_scan(1500, seed=9)
    out = module(scan)
    assert out.dtype == torch.float32 and out.shape == (1500, 48)
    (reference,) = scan_features(student, [scan])
    same = (out @ text.T).argmax(dim=1) == (reference @ text.T).argmax(dim=1)
    assert float(same.float().mean()) >= 0.995
