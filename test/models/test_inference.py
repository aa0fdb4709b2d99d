"""best_entries (the labelling forward): same labels as scan_features + a cosine match, and the
bfloat16 option's agreement with float32."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from relkd_core.errors import ConfigError
from relkd_core.models import StudentConfig
from relkd_core.models.distilled import DistilledStudent, scan_features
from relkd_core.models.inference import best_entries, check_precision, model_for_precision

ConfigFactory = Callable[..., StudentConfig]
ScanFactory = Callable[..., torch.Tensor]


def student(config: StudentConfig, teacher_dim: int = 48) -> DistilledStudent:
    model = DistilledStudent(config, teacher_dim).eval()
    with torch.no_grad():  # a head with a real bias, so the bias terms are exercised
        model.head.bias.normal_(0.0, 0.5)
    return model


def text_rows(count: int, dim: int = 48, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, dim, generator=generator), dim=1)


@pytest.mark.parametrize("backend", ["native", "native-ref"])
def test_best_entries_equal_per_point_features_matched_with_the_text(
        make_config: ConfigFactory, make_scan: ScanFactory, backend: str) -> None:
    model = student(make_config(backend=backend))
    scan, text = make_scan(1200, seed=3), text_rows(6)
    (features,) = scan_features(model, [scan])
    score, index = (features @ text.T).max(dim=1)
    result = best_entries(model, scan, text)
    assert result.features is None
    assert result.index.dtype == torch.int64 and result.index.shape == (1200,)
    assert torch.equal(result.index, index)
    torch.testing.assert_close(result.score, score, atol=1e-5, rtol=1e-5)
    with_features = best_entries(model, scan, text, with_features=True)
    assert with_features.features is not None
    torch.testing.assert_close(with_features.features, features, atol=1e-6, rtol=1e-6)
    assert torch.equal(with_features.index, index)


@pytest.mark.parametrize("backend", ["native", "native-ref"])
def test_best_entries_without_output_normalisation_match_the_features(
        make_config: ConfigFactory, make_scan: ScanFactory, backend: str) -> None:
    model = student(make_config(backend=backend, normalize_output=False))
    scan, text = make_scan(900, seed=4), text_rows(5, seed=1)
    (features,) = scan_features(model, [scan])
    score, index = (features @ text.T).max(dim=1)
    result = best_entries(model, scan, text)
    assert torch.equal(result.index, index)
    torch.testing.assert_close(result.score, score, atol=1e-5, rtol=1e-5)


def test_best_entries_see_changed_weights_and_text(make_config: ConfigFactory,
                                                    make_scan: ScanFactory) -> None:
    # The folded head is cached per model: a changed weight or another text table must count.
    model = student(make_config(backend="native"))
    scan, text = make_scan(800, seed=5), text_rows(6, seed=2)
    first = best_entries(model, scan, text)
    target = int(torch.bincount(first.index, minlength=6).argmin())
    with torch.no_grad():
        model.head.bias.add_(5.0 * text[target])  # pulls every point towards that entry
    moved = best_entries(model, scan, text)
    (features,) = scan_features(model, [scan])
    assert torch.equal(moved.index, (features @ text.T).argmax(dim=1))
    assert float((moved.index == target).float().mean()) > 0.5 > float(
        (first.index == target).float().mean())
    other = text_rows(6, seed=3)
    assert torch.equal(best_entries(model, scan, other).index,
                       (features @ other.T).argmax(dim=1))


@pytest.mark.slow
def test_bfloat16_labels_agree_with_float32(make_config: ConfigFactory,
                                            make_scan: ScanFactory) -> None:
    model = student(make_config(width_multiplier=0.25))
    text = text_rows(8)
    agreements = []
    for seed in range(3):
        scan = make_scan(3000, seed=seed)
        full = best_entries(model, scan, text)
        reduced = best_entries(model, scan, text, precision="bfloat16")
        assert reduced.score.dtype == torch.float32
        agreements.append(float((full.index == reduced.index).float().mean()))
        torch.testing.assert_close(reduced.score, full.score, atol=0.02, rtol=0.0)
    assert min(agreements) >= 0.995, agreements
    # The float32 model itself is left as it was.
    assert model.head.weight.dtype == torch.float32


def test_model_for_precision_caches_one_copy() -> None:
    model = DistilledStudent(StudentConfig(variant="14", width_multiplier=0.125), 8).eval()
    assert model_for_precision(model, "float32") is model
    copy = model_for_precision(model, "bfloat16")
    assert copy is model_for_precision(model, "bfloat16")
    assert copy.head.weight.dtype == torch.bfloat16 and not copy.training


def test_check_precision_names_the_choices() -> None:
    assert check_precision("bfloat16") == "bfloat16"
    with pytest.raises(ConfigError, match=r"precision: expected one of float32, bfloat16, got "
                                          r"'float16'"):
        check_precision("float16")
