"""The parameter catalogue of segment_node: validation, static transforms, descriptors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from relkd_core.errors import ConfigError
from relkd_ros.params import (
    SegmentParams,
    allowed_values,
    default_value,
    parameter_names,
    params_from_values,
    parse_static_transform,
)


def test_params_from_values_fills_defaults_and_casts_lists() -> None:
    params = params_from_values({'checkpoint': 'a.pt', 'vocabulary': ['car', 'road']})
    assert params.vocabulary == ('car', 'road') and params.queue_size == SegmentParams.queue_size
    assert default_value('vocabulary') is None and parameter_names()[0] == 'checkpoint'


def test_params_from_values_reads_unset_lists_as_their_default() -> None:
    # rcl's YAML parser hands `vocabulary: []` to the node as an unset (None) value.
    params = params_from_values({'checkpoint': 'a.pt', 'vocabulary': None,
                                 'image_topics': None, 'static_transforms': []})
    assert params.vocabulary == () and params.image_topics == () == params.static_transforms


@pytest.mark.parametrize(('requested', 'cpus', 'threads'), [
    (0, 2, 1), (0, 1, 1), (0, 16, 8), (3, 2, 3)])
def test_params_threads_default_to_half_the_cores(requested: int, cpus: int,
                                                  threads: int) -> None:
    params = params_from_values({'checkpoint': 'a.pt', 'num_threads': requested})
    assert params.threads(cpu_count=cpus) == threads


def test_allowed_values_names_type_and_range() -> None:
    assert allowed_values('queue_size') == 'an integer in [1, 100]'
    assert allowed_values('min_range_m') == 'a number >= -1'
    assert allowed_values('publish_legend') == 'a boolean'


@pytest.mark.parametrize(('values', 'match'), [
    ({}, 'checkpoint: give the student checkpoint file'),
    ({'score_threshold': 2.0}, 'score_threshold'),
    ({'input_reliability': 'sometimes'}, "input_reliability: expected one of"),
    ({'image_topics': ['/a']}, r'image_topics \(1\) and camera_info_topics \(0\)'),
    ({'min_range_m': 5.0, 'max_range_m': 1.0}, 'must be below max_range_m'),
    ({'intensity_scale': -0.5}, "intensity_scale: expected a value >= 0, or -1 for the "
                                "checkpoint's, got -0.5"),
    ({'queue_size': 0}, 'queue_size'),
    ({'precision': 'float16'}, r"precision: expected one of \['float32', 'bfloat16'\], got "
                               r"'float16'"),
    ({'static_transforms': ['a b 1 2 3']}, 'needs 9 items'),
    ({'vocabulary': ['car', ' ']}, 'vocabulary: a name is empty'),
    ({'camera': 'x'}, 'camera'),
])
def test_params_from_values_rejects_bad_values(values: dict[str, Any], match: str) -> None:
    values = {'checkpoint': 'a.pt', **values} if values else values
    with pytest.raises(ConfigError, match=match):
        params_from_values(values)


def test_params_override_the_checkpoints_scan_input_only_when_set() -> None:
    unset = params_from_values({'checkpoint': 'a.pt'}).scan_input_overrides()
    assert {key: value for key, (value, _) in unset.items()} == dict.fromkeys(
        ('intensity_field', 'intensity_scale', 'min_range_m', 'max_range_m', 'nan_policy'))
    overrides = params_from_values({'checkpoint': 'a.pt', 'intensity_field': 'i',
                                    'max_range_m': 50.0}).scan_input_overrides()
    assert overrides['intensity_field'] == ('i', 'parameter intensity_field')
    assert overrides['max_range_m'] == (50.0, 'parameter max_range_m')
    assert overrides['min_range_m'][0] is None and overrides['intensity_scale'][0] is None
    keep = params_from_values({'checkpoint': 'a.pt', 'nan_policy': 'keep'})
    assert keep.scan_input_overrides()['nan_policy'] == ('keep', 'parameter nan_policy')
    with pytest.raises(ConfigError, match=r"nan_policy: expected one of \['drop', 'keep'\], or "
                                         r"'' for the checkpoint's, got 'zero'"):
        params_from_values({'checkpoint': 'a.pt', 'nan_policy': 'zero'})


def test_parse_static_transform_builds_the_matrix() -> None:
    parent, child, T = parse_static_transform('base lidar 1 2 3 0 0 0.7071068 0.7071068')
    assert (parent, child) == ('base', 'lidar')
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-6)


@pytest.mark.parametrize(('text', 'match'), [
    ('a b 0 0 0 0 0 0 2', 'unit quaternion'),
    ('a b x 0 0 0 0 0 1', 'must be numbers'),
])
def test_parse_static_transform_rejects_bad_entries(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_static_transform(text)


def test_parameter_descriptors_mark_static_parameters_read_only() -> None:
    pytest.importorskip('rcl_interfaces.msg')
    from relkd_ros.params import parameter_descriptor

    assert parameter_descriptor('checkpoint').read_only
    vocabulary = parameter_descriptor('vocabulary')
    assert not vocabulary.read_only and vocabulary.dynamic_typing
    threshold = parameter_descriptor('score_threshold').floating_point_range[0]
    assert (threshold.from_value, threshold.to_value) == (-1.0, 1.0)
    assert parameter_descriptor('queue_size').integer_range[0].to_value == 100
