"""Structural gap: linear CKA and mean |KKᵀ − QQᵀ| properties and hand values."""

from __future__ import annotations

import numpy as np
import pytest

from relkd_core.errors import DataError
from relkd_core.eval.gap import linear_cka, relational_gap, sample_rows, structural_gap


def _random(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, cols))


def test_linear_cka_is_one_for_identical_representations() -> None:
    x = _random(50, 8)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_invariant_to_rotation_and_isotropic_scale() -> None:
    x = _random(60, 6)
    y = _random(60, 5, seed=1)
    rotation, _ = np.linalg.qr(_random(6, 6, seed=2))
    assert linear_cka(3.5 * x @ rotation, y) == pytest.approx(linear_cka(x, y), abs=1e-10)


def test_linear_cka_hand_value_on_tiny_matrices() -> None:
    # Centred x = [-1, 1, 0]ᵀ... (1 column) and y = [-1, 0, 1]: |yᵀx|² = 1, |xᵀx| = 2, |yᵀy| = 2.
    x = np.array([[0.0], [2.0], [1.0]])
    y = np.array([[0.0], [1.0], [2.0]])
    assert linear_cka(x, y) == pytest.approx(0.25)


def test_linear_cka_of_unrelated_features_is_small() -> None:
    assert linear_cka(_random(2000, 4), _random(2000, 4, seed=3)) < 0.02


def test_relational_gap_zero_for_same_similarity_structure_and_hand_value() -> None:
    q = _random(20, 7)
    rotation, _ = np.linalg.qr(_random(7, 7, seed=4))
    assert relational_gap(q @ rotation, q) == pytest.approx(0.0, abs=1e-12)
    # K: two equal rows (cos 1); Q: two orthogonal rows (cos 0): both off-diagonal entries 1.
    assert relational_gap(np.array([[1.0, 0.0], [2.0, 0.0]]),
                          np.array([[1.0, 0.0], [0.0, 3.0]])) == pytest.approx(1.0)


@pytest.mark.parametrize('rows', [2, 511, 1100])
def test_relational_gap_equals_the_mean_over_the_whole_matrix(rows: int) -> None:
    # Blocks of 512 rows, upper triangle only: the same value as every off-diagonal entry.
    k, q = _random(rows, 6, seed=5), _random(rows, 9, seed=6)
    k_unit = k / np.linalg.norm(k, axis=1, keepdims=True)
    q_unit = q / np.linalg.norm(q, axis=1, keepdims=True)
    diff = np.abs(k_unit @ k_unit.T - q_unit @ q_unit.T)
    expected = (diff.sum() - np.trace(diff)) / (rows * (rows - 1))
    assert relational_gap(k, q) == pytest.approx(expected, rel=1e-12)


def test_sample_rows_is_seeded_sorted_and_without_replacement() -> None:
    first = sample_rows(1000, 100, seed=7)
    assert np.array_equal(first, sample_rows(1000, 100, seed=7))
    assert not np.array_equal(first, sample_rows(1000, 100, seed=8))
    assert len(np.unique(first)) == 100 and np.all(np.diff(first) > 0)
    assert np.array_equal(sample_rows(5, 100, seed=0), np.arange(5))


def test_structural_gap_samples_at_most_max_pairs() -> None:
    k, q = _random(300, 4), _random(300, 6, seed=1)
    gap = structural_gap(k, q, max_pairs=64, seed=0)
    rows = sample_rows(300, 64, 0)
    assert gap.num_pairs == 64
    assert gap.relational_gap == pytest.approx(relational_gap(k[rows], q[rows]))
    assert gap.cka == pytest.approx(linear_cka(k[rows], q[rows]))


@pytest.mark.parametrize(('call', 'message'), [
    (lambda: linear_cka(np.ones((3, 2)), np.ones((4, 2))), 'one row per pair'),
    (lambda: linear_cka(np.ones((1, 2)), np.ones((1, 2))), 'at least 2 pairs'),
    (lambda: linear_cka(np.ones((3, 2)), _random(3, 2)), 'constant'),
    (lambda: relational_gap(np.full((3, 2), np.nan), np.ones((3, 2))), 'NaN'),
    (lambda: relational_gap(np.ones(3), np.ones(3)), r'\(M, D\)'),
    (lambda: sample_rows(10, 1, 0), 'at least 2'),
])
def test_gap_bad_input_raises_clear_error(call: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        call()  # type: ignore[operator]
