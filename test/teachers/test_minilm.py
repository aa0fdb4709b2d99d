"""The MiniLM text tower's disk cache: a later process gets the same embeddings without loading
the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relkd_core.teachers.minilm import SentenceEncoder

TEXTS = ['a photo of a car.', 'a photo of a tree.']


def test_embeddings_kept_on_disk_serve_a_new_encoder_without_the_model(
        encoder: SentenceEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('RELKD_CACHE_DIR', str(tmp_path))
    first = SentenceEncoder()
    first._model = encoder._load()  # the session's loaded model, instead of a second load
    expected = first.encode(TEXTS)
    folder = tmp_path / 'minilm' / first.version
    assert len(list(folder.glob('*.npy'))) == 2
    np.testing.assert_array_equal(expected, encoder.encode(TEXTS))
    second = SentenceEncoder()
    got = second.encode(TEXTS)
    assert second._model is None  # never loaded
    np.testing.assert_array_equal(got, expected)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0)


def test_a_damaged_cache_file_is_encoded_again(encoder: SentenceEncoder, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('RELKD_CACHE_DIR', str(tmp_path))
    first = SentenceEncoder()
    first._model = encoder._load()
    expected = first.encode(TEXTS[:1])
    (path,) = (tmp_path / 'minilm' / first.version).glob('*.npy')
    path.write_bytes(b'not an array')
    second = SentenceEncoder()
    second._model = encoder._load()
    np.testing.assert_array_equal(second.encode(TEXTS[:1]), expected)
    np.testing.assert_array_equal(np.load(path), expected[0])  # rewritten


def test_cache_off_writes_nothing(encoder: SentenceEncoder, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('RELKD_CACHE_DIR', 'off')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    off = SentenceEncoder()
    off._model = encoder._load()
    np.testing.assert_array_equal(off.encode(TEXTS), encoder.encode(TEXTS))
    assert not any(tmp_path.iterdir())
