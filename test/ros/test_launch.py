"""Drift guards: launch file, setup.py, config/segment.yaml, config/relkd.rviz, relkd-label and
the node's parameters agree.

Read statically (ast, YAML): launch and launch_ros are not pip-installable. That the node runs
from these files is tested by starting it (test_node_startup.py) and, with a ROS install, by
scripts/check_launch.sh.
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from relkd_core.infer.topics import LABELED_TOPIC, LEGEND_TOPIC
from relkd_core.sim.rig import RIGS
from relkd_ros.environment import (
    PROFILE_VARIABLES,
    node_environment,
    profile_environment,
    profile_variable,
)
from relkd_ros.params import (
    SCAN_INPUT_PARAMETERS,
    SegmentParams,
    default_value,
    parameter_names,
    params_from_values,
)

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / 'launch' / 'segment.launch.py'


def _tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _arguments() -> dict[str, tuple[Any, str]]:
    table = next(node.value for node in _tree().body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], 'id', '') == 'ARGUMENTS')
    return ast.literal_eval(table)


def _keyword_values(name: str) -> list[ast.expr]:
    return [k.value for node in ast.walk(_tree()) if isinstance(node, ast.Call)
            for k in node.keywords if k.arg == name]


def _console_scripts() -> dict[str, str]:
    setup = ast.parse((ROOT / 'setup.py').read_text())
    call = next(node for node in ast.walk(setup) if isinstance(node, ast.Call)
                and getattr(node.func, 'id', '') == 'setup')
    entry_points = ast.literal_eval(next(k.value for k in call.keywords
                                         if k.arg == 'entry_points'))
    return dict(line.replace(' ', '').split('=') for line in entry_points['console_scripts'])


def test_launch_executables_are_console_scripts_of_the_nodes() -> None:
    executables = {ast.literal_eval(v) for v in _keyword_values('executable')}
    scripts = _console_scripts()
    assert scripts['segment_node'] == 'relkd_ros.segment_node:main'
    assert scripts['segment_lifecycle_node'] == 'relkd_ros.segment_lifecycle_node:main'
    assert executables == {'segment_node', 'segment_lifecycle_node', 'rviz2'}


def test_launch_arguments_have_descriptions_and_cover_the_documented_ones() -> None:
    arguments = _arguments()
    assert {'checkpoint', 'params_file', 'points', 'labeled_points', 'legend', 'lifecycle',
            'use_rviz', 'fixed_frame', 'dds_profile'} <= set(arguments)
    assert all(description for _, description in arguments.values())


def test_launch_remaps_the_topic_parameters_defaults() -> None:
    (remappings,) = _keyword_values('remappings')
    sources = {ast.literal_eval(pair.elts[0]) for pair in remappings.elts}
    defaults = SegmentParams()
    assert sources == {defaults.points_topic, defaults.labeled_topic, defaults.legend_topic}
    assert sources <= set(_arguments())


def test_segment_yaml_sets_every_parameter_the_rcl_parser_can_read() -> None:
    """Every declared parameter is in the file except the empty lists, which rcl's parser
    would turn into "unset", and the scan-reading ones, which must stay unset to take the
    checkpoint's; the rest validates."""
    values = yaml.safe_load((ROOT / 'config' / 'segment.yaml').read_text())['/**'][
        'ros__parameters']
    missing = set(parameter_names()) - set(values)
    assert set(values) <= set(parameter_names())
    assert missing == {name for name in parameter_names()
                       if default_value(name) is None} | set(SCAN_INPUT_PARAMETERS)
    assert not any(value == [] for value in values.values())
    params = params_from_values({**values, 'checkpoint': 'student.pt'})
    assert params.vocabulary == () and params.input_reliability == 'reliable'


def test_rviz_config_shows_what_the_node_and_relkd_label_publish() -> None:
    rviz = yaml.safe_load((ROOT / 'config' / 'relkd.rviz').read_text())
    manager = rviz['Visualization Manager']
    topics = {d['Name']: d['Topic']['Value'] for d in manager['Displays'] if 'Topic' in d}
    arguments = _arguments()
    bag_topics = {f'/{LABELED_TOPIC}', f'/{LEGEND_TOPIC}'}  # relkd-label's output topics
    assert {topics['Labeled points'], topics['Legend']} == bag_topics == {
        arguments['labeled_points'][0], arguments['legend'][0]}
    frame = manager['Global Options']['Fixed Frame']
    assert frame == arguments['fixed_frame'][0] == RIGS['nuscenes'].lidar.frame_id


def test_dds_profile_environment_sets_one_variable_per_distro() -> None:
    assert profile_variable('humble') == profile_variable('jazzy') == PROFILE_VARIABLES[1]
    assert profile_variable('kilted') == profile_variable('rolling') == PROFILE_VARIABLES[0]
    assert profile_environment('/p.xml', 'jazzy') == {'FASTRTPS_DEFAULT_PROFILES_FILE': '/p.xml'}
    assert profile_environment('/p.xml', 'kilted') == {'FASTDDS_DEFAULT_PROFILES_FILE': '/p.xml'}
    assert profile_environment('none') == profile_environment('') == {
        'RELKD_NO_DDS_PROFILE': '1'}


def test_node_environment_adds_passive_openmp_waiting_unless_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv('OMP_WAIT_POLICY', raising=False)
    assert node_environment('none')['OMP_WAIT_POLICY'] == 'PASSIVE'
    monkeypatch.setenv('OMP_WAIT_POLICY', 'ACTIVE')
    assert 'OMP_WAIT_POLICY' not in node_environment('none')


def test_dds_profile_is_valid_xml_with_a_large_shared_memory_segment() -> None:
    root = ET.parse(ROOT / 'config' / 'fastdds_large_messages.xml').getroot()
    namespace = {'dds': 'http://www.eprosima.com'}
    sizes = [int(e.text or 0) for e in root.iterfind('.//dds:segment_size', namespace)]
    assert sizes and min(sizes) >= 16 * 2**20


def test_check_launch_script_refuses_to_run_without_ros_or_sources(tmp_path: Path) -> None:
    import subprocess

    env = {'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)}
    result = subprocess.run(['bash', str(ROOT / 'scripts' / 'check_launch.sh')], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert 'no ros2 on PATH: source a ROS 2 install or pass --sources DIR' in result.stderr
    assert not list(tmp_path.iterdir())
