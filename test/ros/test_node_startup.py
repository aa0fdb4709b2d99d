"""segment_node started the way users start it: from the shipped parameter file through the
real rcl parser, with the parameters and environment the launch file gives it, with the
README's command line; and refusing bad configuration with one line and a non-zero exit."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('visualization_msgs.msg')

from infer.checkpoints import synthetic_scan, tiny_checkpoint, write_tiny_checkpoint
from ros.nodetools import (
    ROOT,
    Probe,
    free_domain_id,
    node_command,
    node_log_tail,
    process_environment,
    running_node,
    xyzi_cloud,
)
from sensor_msgs.msg import PointCloud2

from relkd_core.data.scan import ScanInput
from relkd_core.infer import LABELED_POINT_DTYPE
from relkd_core.infer.labeler import Labeler
from relkd_core.models.distilled import load_checkpoint, save_checkpoint
from relkd_ros.environment import PROFILE_VARIABLES, node_environment
from relkd_ros.segment_node import shipped_config

# Each test starts node processes: run by make test-slow (and CI), not make test.
pytestmark = pytest.mark.slow

SHIPPED_PARAMS = ROOT / 'config' / 'segment.yaml'
LAUNCH = ROOT / 'launch' / 'segment.launch.py'


def launch_defaults() -> dict[str, Any]:
    """The launch file's ARGUMENTS table, read without launch (not pip-installable)."""
    tree = ast.parse(LAUNCH.read_text())
    table = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], 'id', '') == 'ARGUMENTS')
    return {name: default for name, (default, _) in ast.literal_eval(table).items()}


def labels_one_scan(ros_args: Sequence[str], tmp_path: Path, *, points: str = 'points',
                    labeled: str = 'labeled_points', env: dict[str, str] | None = None,
                    module: str = 'relkd_ros.segment_node', argv: Sequence[str] = ()
                    ) -> tuple[Any, str]:
    """Start the node with ``ros_args``, publish one scan on ``points`` and return the labeled
    cloud from ``labeled`` and the node's log."""
    domain = free_domain_id()
    log = tmp_path / 'node.log'
    with running_node({}, domain, log, module=module, ros_args=ros_args, argv=argv, env=env):
        probe = Probe(domain)
        try:
            publisher = probe.publisher(PointCloud2, points)
            probe.subscribe(PointCloud2, labeled)
            if not probe.wait_matched(publisher, 60):
                raise AssertionError(f'the node never subscribed\n{node_log_tail(log)}')
            scan = synthetic_scan(2000, seed=1)
            for attempt in range(40):  # until the node's publisher matched this side too
                publisher.publish(xyzi_cloud(scan, 10**9 * (attempt + 1)))
                if probe.wait_for(lambda: bool(probe.messages(labeled)), 0.5):
                    break
            if not probe.messages(labeled):
                raise AssertionError(f'no labeled cloud on {labeled}\n{node_log_tail(log)}')
            message = probe.messages(labeled)[0]
        finally:
            probe.close()
    return message, log.read_text(errors='replace')


def test_segment_node_starts_from_the_shipped_params_file(tmp_path: Path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / 'student.pt')
    message, log = labels_one_scan(['--params-file', str(SHIPPED_PARAMS),
                                    '-p', f'checkpoint:={checkpoint}'], tmp_path)
    points = np.frombuffer(message.data, LABELED_POINT_DTYPE)
    assert len(points) == 2000 and (points['label'] < 3).sum() > 1500
    assert 'with 3 entries (car, road, vegetation)' in log  # the checkpoint's vocabulary
    assert 'student ready: warm-up scan labelled in ' in log  # before the first real scan


def test_segment_node_labels_in_bfloat16_when_asked(tmp_path: Path) -> None:
    """precision:=bfloat16 reaches the Labeler of the running node: the start-up line says so
    and at least 99.5 % of the labels equal the float32 labels of the same scan in-process."""
    checkpoint = write_tiny_checkpoint(tmp_path / 'student.pt')
    message, log = labels_one_scan(['--params-file', str(SHIPPED_PARAMS),
                                    '-p', f'checkpoint:={checkpoint}',
                                    '-p', 'precision:=bfloat16'], tmp_path)
    assert 'on cpu in bfloat16' in log, log
    labels = np.frombuffer(message.data, LABELED_POINT_DTYPE)['label']
    reference = Labeler(load_checkpoint(checkpoint), None).label(synthetic_scan(2000, seed=1))
    assert len(labels) == 2000
    assert float((labels == reference.labels).mean()) >= 0.995


def test_segment_node_reads_scans_as_the_checkpoint_records(tmp_path: Path) -> None:
    """The shipped params file sets no intensity or range parameter: the checkpoint's
    ScanInput applies; a parameter set explicitly overrides it and the log says so."""
    recorded = ScanInput(intensity_scale=0.5, min_range_m=5.0, max_range_m=120.0)
    checkpoint = tmp_path / 'student.pt'
    save_checkpoint(checkpoint, dataclasses.replace(tiny_checkpoint(), scan_input=recorded))
    scan = synthetic_scan(2000, seed=1)
    near = np.linalg.norm(scan[:, :3], axis=1) < 5.0
    assert near.any() and not near.all()
    base = ['--params-file', str(SHIPPED_PARAMS), '-p', f'checkpoint:={checkpoint}']
    (tmp_path / 'default').mkdir()
    (tmp_path / 'set').mkdir()
    message, log = labels_one_scan(base, tmp_path / 'default')
    points = np.frombuffer(message.data, LABELED_POINT_DTYPE)
    np.testing.assert_array_equal(points['intensity'], scan[:, 3] * np.float32(0.5))
    assert (points['label'][near] == 0xFFFF).all()
    assert 'overrides' not in log
    message, log = labels_one_scan([*base, '-p', 'intensity_scale:=1.0'], tmp_path / 'set')
    points = np.frombuffer(message.data, LABELED_POINT_DTYPE)
    np.testing.assert_array_equal(points['intensity'], scan[:, 3])
    assert "intensity_scale 1.0 (parameter intensity_scale) overrides the checkpoint's 0.5" in log


def test_segment_node_runs_with_the_launch_files_parameters_and_environment(
        tmp_path: Path) -> None:
    """What ``ros2 launch relkd_ros segment.launch.py checkpoint:=…`` hands the node, by
    default: the params file, the checkpoint override, the remaps and the DDS profile."""
    defaults = launch_defaults()
    checkpoint = write_tiny_checkpoint(tmp_path / 'student.pt')
    profile = shipped_config('fastdds_large_messages.xml')
    assert profile is not None and defaults['dds_profile'] == ('config', profile.name)
    env = node_environment(str(profile), distro='kilted')
    ros_args = ['--params-file', str(ROOT.joinpath(*defaults['params_file'])),
                '-p', f'checkpoint:={checkpoint}',
                *[item for name in ('points', 'labeled_points', 'legend')
                  for item in ('-r', f'{name}:={defaults[name]}')]]
    message, log = labels_one_scan(ros_args, tmp_path, points=defaults['points'],
                                   labeled=defaults['labeled_points'], env=env)
    assert len(np.frombuffer(message.data, LABELED_POINT_DTYPE)) == 2000
    assert 'XMLPARSER' not in log and 'PROFILES_FILE' not in log, log
    assert f'labelling {defaults["points"]} → {defaults["labeled_points"]}' in log


def test_segment_node_runs_the_readme_command(tmp_path: Path) -> None:
    """README: relkd-segment --ros-args --params-file config/segment.yaml -p
    checkpoint:=student.pt -r points:=/LIDAR_TOP"""
    readme = ' '.join((ROOT / 'README.md').read_text().split())
    command = 'relkd-segment --ros-args --params-file config/segment.yaml -p checkpoint:=student.pt -r points:=/LIDAR_TOP'  # noqa: E501
    assert command in readme
    write_tiny_checkpoint(tmp_path / 'student.pt')
    ros_args = command.split('--ros-args ')[1].replace('config/', f'{ROOT}/config/').replace(
        'student.pt', str(tmp_path / 'student.pt')).split()
    message, _ = labels_one_scan(ros_args, tmp_path, points='/LIDAR_TOP')
    assert message.header.frame_id == 'lidar'


def test_segment_lifecycle_node_autostart_runs_from_the_shipped_params_file(
        tmp_path: Path) -> None:
    """``lifecycle:=true`` in the launch file: the managed node with ``--autostart``."""
    checkpoint = write_tiny_checkpoint(tmp_path / 'student.pt')
    message, log = labels_one_scan(['--params-file', str(SHIPPED_PARAMS),
                                    '-p', f'checkpoint:={checkpoint}'], tmp_path,
                                   module='relkd_ros.segment_lifecycle_node',
                                   argv=['--autostart'])
    assert len(np.frombuffer(message.data, LABELED_POINT_DTYPE)) == 2000
    assert 'configured: ' in log and 'Traceback' not in log


def test_shipped_dds_profile_loads_once_without_xml_errors(tmp_path: Path) -> None:
    """The node's own choice (no variable set) gives a clean log; both variables set, as an
    older launch file did, makes Fast DDS 3 complain, which this test would see."""
    checkpoint = write_tiny_checkpoint(tmp_path / 'student.pt')
    profile = str(shipped_config('fastdds_large_messages.xml'))
    _, clean = labels_one_scan(['-p', f'checkpoint:={checkpoint}'], tmp_path)
    assert 'XMLPARSER' not in clean and 'PROFILES_FILE' not in clean, clean
    both = dict.fromkeys(PROFILE_VARIABLES, profile)
    _, doubled = labels_one_scan(['-p', f'checkpoint:={checkpoint}'], tmp_path, env=both)
    assert 'FASTRTPS_DEFAULT_PROFILES_FILE value is used' in doubled


def _start_fails(ros_args: list[str], tmp_path: Path, params_file: str | None = None
                 ) -> tuple[int, str]:
    if params_file is not None:
        path = tmp_path / 'params.yaml'
        path.write_text(params_file)
        ros_args = ['--params-file', str(path), *ros_args]
    # Python lists every module it imports (on stderr, "import time: ... | name").
    env = process_environment(free_domain_id(), {'PYTHONPROFILEIMPORTTIME': '1'})
    result = subprocess.run(node_command({}, ros_args=ros_args), cwd=ROOT, timeout=120, env=env,
                            capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(('ros_args', 'params_file', 'message'), [
    (['-p', 'queue_size:=0'], None,
     'cannot start: parameter queue_size: got 0, expected an integer in [1, 100]'),
    ([], '/**:\n  ros__parameters:\n    sync_slop_s: fast\n',
     "cannot start: parameter sync_slop_s: got 'fast', expected a number in [0, 10]"),
    (['-p', 'checkpoint:=/nonexistent/student.pt'], None,
     "cannot start: checkpoint: no such file '/nonexistent/student.pt'"),
    ([], None, 'cannot start: segment_node parameters: checkpoint: give the student checkpoint'),
    (['-p', 'input_reliability:=sometimes'], None,
     "cannot start: segment_node parameters: input_reliability: expected one of"),
])
def test_segment_node_bad_configuration_exits_with_one_line(
        ros_args: list[str], params_file: str | None, message: str, tmp_path: Path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / 'student.pt')
    if not any('checkpoint' in a for a in ros_args) and 'give the student' not in message:
        ros_args = [*ros_args, '-p', f'checkpoint:={checkpoint}']
    code, output = _start_fails(ros_args, tmp_path, params_file)
    assert code == 1, output
    assert 'Traceback' not in output, output
    fatal = [line for line in output.splitlines() if 'cannot start' in line]
    assert len(fatal) == 1 and message in fatal[0], output
    # Refused before anything loads torch (about 3 s of the start): it fails in about 1 s.
    imported = {line.rsplit('|', 1)[-1].strip() for line in output.splitlines()
                if line.startswith('import time:')}
    assert 'rclpy' in imported and 'torch' not in imported
