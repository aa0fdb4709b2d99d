"""Tests for relkd_core.teachers.vocabulary: defaults, free text and YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from relkd_core.errors import ConfigError, TeacherError
from relkd_core.taxonomy import CLASS_NAMES
from relkd_core.teachers.vocabulary import Vocabulary, load_vocabulary

CONFIG = Path(__file__).resolve().parents[2] / 'config' / 'vocabularies'


def test_vocabulary_default_is_the_16_classes_with_everyday_prompts() -> None:
    vocabulary = Vocabulary.default()
    assert vocabulary.names == CLASS_NAMES
    assert vocabulary.labels == tuple(range(1, 17))
    prompts = dict(zip(vocabulary.names, vocabulary.prompts, strict=True))
    assert prompts['driveable_surface'] == ('road',)
    assert prompts['manmade'][0] == 'building'
    assert prompts['construction_vehicle'][0] == 'construction vehicle'


def test_vocabulary_from_names_maps_taxonomy_names_and_keeps_free_text() -> None:
    vocabulary = Vocabulary.from_names(['vehicle', 'car', 'driveable_surface', 'a person walking'])
    assert vocabulary.labels == (0, 4, 11, 0)
    assert vocabulary.prompts == (('vehicle',), ('car',), ('road',), ('a person walking',))


def test_load_vocabulary_nuscenes_yaml_equals_the_default() -> None:
    assert load_vocabulary(CONFIG / 'nuscenes.yaml') == Vocabulary.default()


def test_load_vocabulary_every_shipped_file_loads() -> None:
    for path in sorted(CONFIG.glob('*.yaml')):
        assert len(load_vocabulary(path)) > 0, path


def test_load_vocabulary_fills_prompts_and_labels(tmp_path: Path) -> None:
    path = tmp_path / 'v.yaml'
    path.write_text('classes:\n  - {name: car}\n  - {name: lorry, prompts: [lorry, truck], '
                    'label: 10}\n  - {name: traffic light}\n')
    vocabulary = load_vocabulary(path)
    assert vocabulary.names == ('car', 'lorry', 'traffic light')
    assert vocabulary.prompts == (('car',), ('lorry', 'truck'), ('traffic light',))
    assert vocabulary.labels == (4, 10, 0)


@pytest.mark.parametrize(('text', 'message'), [
    ('classes:\n  - {name: car}\n  - {name: car}\n', r"repeated: \['car'\]"),
    ('classes:\n  - {name: car, label: 17}\n', r'classes\[0\].label: expected a value in'),
    ('classes:\n  - {name: car, promts: [x]}\n', "did you mean 'prompts'"),
    ('classes:\n  - {name: car, prompts: [""]}\n', "class 'car' needs non-empty prompts"),
    ('classes: []\n', 'at least one class name'),
    ('names: [car]\n', "missing required key 'classes'|unknown key 'names'"),
])
def test_load_vocabulary_rejects_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_vocabulary(path)


@pytest.mark.parametrize(('kwargs', 'message'), [
    ({'names': (), 'prompts': (), 'labels': ()}, 'at least one class name'),
    ({'names': ('a',), 'prompts': (('a',),), 'labels': (1, 2)}, 'one item per class'),
    ({'names': ('a',), 'prompts': ((),), 'labels': (1,)}, "'a' needs non-empty prompts"),
    ({'names': ('a',), 'prompts': (('a',),), 'labels': (-1,)}, 'has label -1'),
])
def test_vocabulary_rejects_inconsistent_entries(kwargs: dict[str, tuple[object, ...]],
                                                 message: str) -> None:
    with pytest.raises(TeacherError, match=message):
        Vocabulary(**kwargs)  # type: ignore[arg-type]


def test_vocabulary_from_names_rejects_a_bare_string() -> None:
    with pytest.raises(TeacherError, match=r"write \['vehicle'\]"):
        Vocabulary.from_names('vehicle')
