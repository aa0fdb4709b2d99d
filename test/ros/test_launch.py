"""Drift guards: launch file, setup.py, config/segment.yaml and the node's parameters agree.

Parsed statically (ast, YAML): launch and launch_ros are not pip-installable.
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

from relkd_ros.params import SegmentParams, parameter_names, params_from_values

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / 'launch' / 'segment.launch.py'


def _calls(path: Path, name: str) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, 'id', getattr(node.func, 'attr', None)) == name]


def _keywords(call: ast.Call) -> dict[str, Any]:
    return {k.arg: k.value for k in call.keywords if k.arg}


def _console_scripts() -> dict[str, str]:
    (setup,) = _calls(ROOT / 'setup.py', 'setup')
    entry_points = ast.literal_eval(_keywords(setup)['entry_points'])
    return dict(line.replace(' ', '').split('=') for line in entry_points['console_scripts'])


def _segment_node_call() -> ast.Call:
    nodes = [call for call in _calls(LAUNCH, 'Node')
             if ast.literal_eval(_keywords(call)['package']) == 'relkd_ros']
    assert len(nodes) == 1
    return nodes[0]


def test_launch_executable_is_a_console_script_of_the_node() -> None:
    executable = ast.literal_eval(_keywords(_segment_node_call())['executable'])
    assert _console_scripts()[executable] == 'relkd_ros.segment_node:main'


def test_launch_parameter_overrides_are_declared_by_the_node() -> None:
    parameters = _keywords(_segment_node_call())['parameters']
    overrides = [element for element in parameters.elts if isinstance(element, ast.Dict)]
    keys = {ast.literal_eval(key) for d in overrides for key in d.keys}
    assert keys and keys <= set(parameter_names())


def test_launch_remaps_topic_parameters_defaults() -> None:
    remappings = _keywords(_segment_node_call())['remappings']
    sources = {ast.literal_eval(pair.elts[0]) for pair in remappings.elts}
    defaults = SegmentParams()
    assert sources == {defaults.points_topic, defaults.labeled_topic, defaults.legend_topic}


def test_launch_arguments_have_descriptions() -> None:
    arguments = _calls(LAUNCH, 'DeclareLaunchArgument')
    names = [ast.literal_eval(call.args[0]) for call in arguments]
    assert {'checkpoint', 'params_file', 'use_rviz'} <= set(names)
    assert all(ast.literal_eval(_keywords(call)['description']) for call in arguments)


def test_segment_yaml_sets_exactly_the_declared_parameters() -> None:
    data = yaml.safe_load((ROOT / 'config' / 'segment.yaml').read_text())
    values = data['/**']['ros__parameters']
    assert list(values) == list(parameter_names())
    params = params_from_values({**values, 'checkpoint': 'student.pt'})
    assert params.input_reliability == 'reliable'


def test_rviz_config_shows_the_launch_topics() -> None:
    rviz = yaml.safe_load((ROOT / 'config' / 'relkd.rviz').read_text())
    topics = {d['Topic']['Value'] for d in rviz['Visualization Manager']['Displays']
              if 'Topic' in d}
    defaults = {ast.literal_eval(_keywords(call)['default_value'])
                for call in _calls(LAUNCH, 'DeclareLaunchArgument')
                if ast.literal_eval(call.args[0]) in ('labeled_points', 'legend')}
    assert defaults <= topics


def test_dds_profile_is_valid_xml_with_a_large_shared_memory_segment() -> None:
    root = ET.parse(ROOT / 'config' / 'fastdds_large_messages.xml').getroot()
    namespace = {'dds': 'http://www.eprosima.com'}
    sizes = [int(e.text or 0) for e in root.iterfind('.//dds:segment_size', namespace)]
    assert sizes and min(sizes) >= 16 * 2**20
