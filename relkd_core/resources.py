"""Where the shipped configuration files live: the source tree for ``pip install -e .``,
``share/relkd_ros/config`` for ``colcon build`` or a wheel install."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from relkd_core.errors import ConfigError

__all__ = ['config_dirs', 'find_named_config']

PACKAGE = 'relkd_ros'


def config_dirs() -> list[Path]:
    """Candidate ``config/`` folders, most specific first (only existing ones)."""
    candidates = [Path(__file__).resolve().parents[1] / 'config']
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / 'share' / PACKAGE / 'config')
    candidates.append(Path(sys.prefix) / 'share' / PACKAGE / 'config')
    seen: list[Path] = []
    for path in candidates:
        if path.is_dir() and path not in seen:
            seen.append(path)
    return seen


def find_named_config(kind: str, name_or_path: str | os.PathLike[str]) -> Path:
    """Resolve ``name_or_path``: an existing YAML file, or the name of a shipped file
    ``config/<kind>/<name>.yaml`` (e.g. ``kind='presets'``, ``name='synth-nuscenes'``)."""
    path = Path(name_or_path)
    if path.suffix in ('.yaml', '.yml') or path.is_file():
        if not path.is_file():
            raise ConfigError(f'{kind[:-1] if kind.endswith("s") else kind} file {path} '
                              'does not exist')
        return path
    names: set[str] = set()
    for folder in config_dirs():
        candidate = folder / kind / f'{name_or_path}.yaml'
        if candidate.is_file():
            return candidate
        names.update(p.stem for p in (folder / kind).glob('*.yaml'))
    raise ConfigError(f'unknown {kind[:-1] if kind.endswith("s") else kind} {str(name_or_path)!r}: '
                      f'expected a YAML file or one of {sorted(names)}')
