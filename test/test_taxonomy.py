"""Taxonomies as data: the shipped nuscenes16 and semantickitti19, and user YAML files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relkd_core.errors import ConfigError
from relkd_core.taxonomy import (
    CLASS_NAMES,
    LABEL_COLORS,
    NUSCENES16,
    TAXONOMIES,
    label_name,
    load_taxonomy,
)


def test_taxonomy_nuscenes16_keeps_the_module_constants() -> None:
    assert CLASS_NAMES == (
        'barrier', 'bicycle', 'bus', 'car', 'construction_vehicle', 'motorcycle', 'pedestrian',
        'traffic_cone', 'trailer', 'truck', 'driveable_surface', 'other_flat', 'sidewalk',
        'terrain', 'manmade', 'vegetation')
    assert LABEL_COLORS[0] == (0, 0, 0) and LABEL_COLORS[4] == (255, 158, 0)
    assert label_name(0) == 'ignore' and label_name(11) == 'driveable_surface'
    assert NUSCENES16.prompts[NUSCENES16.label_of['driveable_surface'] - 1] == ('road',)


def test_taxonomy_nuscenes16_maps_the_32_general_classes() -> None:
    # lidarseg general-class index -> challenge label (nuScenes-lidarseg's 16-class mapping).
    expected = {0: 0, 1: 0, 2: 7, 3: 7, 4: 7, 5: 0, 6: 7, 7: 0, 8: 0, 9: 1, 10: 0, 11: 0,
                12: 8, 13: 0, 14: 2, 15: 3, 16: 3, 17: 4, 18: 5, 19: 0, 20: 0, 21: 6, 22: 9,
                23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 0, 30: 16, 31: 0}
    raw = np.array(sorted(expected))
    assert NUSCENES16.map_raw(raw).tolist() == [expected[r] for r in raw]
    assert len(NUSCENES16.raw_names) == 32


def test_taxonomy_semantickitti19_learning_map() -> None:
    kitti = load_taxonomy('semantickitti19')
    assert kitti.num_classes == 19
    assert kitti.names[0] == 'car' and kitti.names[-1] == 'traffic-sign'
    # moving classes merge into their static ones; bus/on-rails into other-vehicle;
    # lane-marking is road; unlabeled, outlier, other-structure, other-object are ignored.
    raw = [10, 252, 11, 13, 16, 256, 257, 259, 18, 258, 30, 254, 31, 253, 32, 255, 40, 60,
           44, 48, 49, 50, 51, 70, 71, 72, 80, 81, 0, 1, 52, 99]
    labels = [1, 1, 2, 5, 5, 5, 5, 5, 4, 4, 6, 6, 7, 7, 8, 8, 9, 9,
              10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 0, 0, 0, 0]
    assert kitti.map_raw(np.array(raw, dtype=np.uint32)).tolist() == labels


@pytest.mark.parametrize('name', TAXONOMIES)
def test_taxonomy_representative_raw_ids_invert_the_map(name: str) -> None:
    taxonomy = load_taxonomy(name)
    representative = taxonomy.representative_raw_ids()
    assert taxonomy.map_raw(representative).tolist() == list(range(taxonomy.num_classes + 1))


def test_taxonomy_user_yaml(tmp_path: Path) -> None:
    path = tmp_path / 'mine.yaml'
    path.write_text('name: mine\nclasses:\n'
                    '  - {id: 1, name: ground, color: [10, 20, 30], raw_ids: [7, 8]}\n'
                    '  - {id: 2, name: parked_car, prompts: [car, parked car]}\n')
    taxonomy = load_taxonomy(path)
    assert taxonomy.names == ('ground', 'parked_car')
    assert taxonomy.colors[1] == (10, 20, 30)
    assert taxonomy.prompts == (('ground',), ('car', 'parked car'))
    assert taxonomy.map_raw([7, 8, 9]).tolist() == [1, 1, 0]


@pytest.mark.parametrize(('classes', 'message'), [
    ('  - {id: 2, name: a}\n', r'has id 2; ids must be 1..N in order, expected 1'),
    ('  - {id: 1, name: a}\n  - {id: 2, name: a}\n', r'names must be unique'),
    ('  - {id: 1, name: ignore}\n', r'names must be unique and not "ignore"'),
    ('  - {id: 1, name: a, raw_ids: [3]}\n  - {id: 2, name: b, raw_ids: [3]}\n',
     r'raw id 3 is mapped twice \(a and b\)'),
    ('  - {id: 1, name: a, color: [0, 0, 300]}\n', r'classes\[0\]\.color'),
    ('  - {id: 1, name: a, colour: [0, 0, 0]}\n', r"did you mean 'color'"),
])
def test_taxonomy_bad_yaml_is_rejected(tmp_path: Path, classes: str, message: str) -> None:
    path = tmp_path / 'bad.yaml'
    path.write_text('name: bad\nclasses:\n' + classes)
    with pytest.raises(ConfigError, match=message):
        load_taxonomy(path)


def test_taxonomy_unknown_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown taxonom.* 'kitti19'.*semantickitti19"):
        load_taxonomy('kitti19')


def test_taxonomy_label_name_out_of_range() -> None:
    with pytest.raises(ValueError, match=r'semantickitti19: label must be in 0..19, got 20'):
        load_taxonomy('semantickitti19').label_name(20)
