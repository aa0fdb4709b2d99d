"""Tests for relkd_core.config: strict YAML loading of frozen config dataclasses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
import yaml

from relkd_core import config as config_module
from relkd_core.config import (
    bounded,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from relkd_core.errors import ConfigError, RelkdError

# --- tiny config dataclasses, shaped like the project's own ------------------------------------


@dataclass(frozen=True, kw_only=True)
class LidarConfig:
    """A nested section: ranges, a Literal and a fixed-length tuple."""

    num_beams: int = bounded(32, min=1)
    max_range_m: float = bounded(70.0, min=0.0, max=200.0)
    storage: Literal["mcap", "sqlite3"] = "mcap"
    fov_deg: tuple[float, float] = (-30.0, 10.0)


@dataclass(frozen=True, kw_only=True)
class CameraConfig:
    """An optional section with a required field."""

    topic: str
    image_size_px: tuple[int, int] = bounded((224, 224), min=1)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """The top-level config, covering every supported field type."""

    name: str = "run"
    seed: int = 0
    learning_rate: float = 1.0e-3
    use_amp: bool = False
    out_dir: Path = Path("runs")
    checkpoint: Path | None = None
    note: Optional[str] = None  # noqa: UP045 - the typing.Optional spelling must work too
    lidar: LidarConfig = field(default_factory=LidarConfig)
    camera: CameraConfig | None = None
    voxel_sizes_m: tuple[float, ...] = (0.1, 0.2)
    tags: list[str] = field(default_factory=list)
    loss_weights: dict[str, float] = field(default_factory=dict)
    extra: Any = None


@dataclass(frozen=True, kw_only=True)
class RequiredConfig:
    """A config whose only field has no default."""

    data_dir: Path


@dataclass(frozen=True, kw_only=True)
class WindowConfig:
    """A config with a cross-field check in validate()."""

    min_dt_ns: int = 0
    max_dt_ns: int = 10

    def validate(self) -> None:
        """Raise ValueError when the window is empty."""
        if self.min_dt_ns > self.max_dt_ns:
            raise ValueError(
                f"min_dt_ns ({self.min_dt_ns}) must not exceed max_dt_ns ({self.max_dt_ns})"
            )


@dataclass(frozen=True, kw_only=True)
class OuterConfig:
    """Nests WindowConfig to check the validate() error names the section."""

    window: WindowConfig = field(default_factory=WindowConfig)


def _full_config() -> RunConfig:
    return RunConfig(
        name="kitti",
        seed=7,
        learning_rate=0.5,
        use_amp=True,
        out_dir=Path("/tmp/out"),
        checkpoint=Path("ckpt/best.pt"),
        note="hello",
        lidar=LidarConfig(num_beams=64, max_range_m=120.0, storage="sqlite3", fov_deg=(-25.0, 3.0)),
        camera=CameraConfig(topic="/cam/image", image_size_px=(480, 640)),
        voxel_sizes_m=(0.05,),
        tags=["a", "b"],
        loss_weights={"contrastive": 1.0, "relational": 0.5},
        extra={"free": [1, 2]},
    )


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- config_from_dict --------------------------------------------------------------------------


def test_config_from_dict_empty_gives_defaults() -> None:
    assert config_from_dict(RunConfig, {}) == RunConfig()


def test_config_from_dict_converts_every_field_type() -> None:
    config = config_from_dict(
        RunConfig,
        {
            "learning_rate": 2,
            "out_dir": "/data/out",
            "checkpoint": "best.pt",
            "lidar": {"num_beams": 16, "fov_deg": [-10, 10]},
            "camera": {"topic": "/cam"},
            "voxel_sizes_m": [0.1, 1],
            "tags": ["x"],
            "loss_weights": {"a": 1},
        },
    )
    assert config.learning_rate == 2.0 and type(config.learning_rate) is float
    assert config.out_dir == Path("/data/out")
    assert config.checkpoint == Path("best.pt")
    assert config.lidar == LidarConfig(num_beams=16, fov_deg=(-10.0, 10.0))
    assert type(config.lidar.fov_deg[0]) is float
    assert config.camera == CameraConfig(topic="/cam", image_size_px=(224, 224))
    assert config.voxel_sizes_m == (0.1, 1.0)
    assert config.tags == ["x"]
    assert config.loss_weights == {"a": 1.0}


def test_config_from_dict_optional_accepts_none() -> None:
    config = config_from_dict(RunConfig, {"checkpoint": None, "note": None, "camera": None})
    assert (config.checkpoint, config.note, config.camera) == (None, None, None)


def test_config_from_dict_any_passes_value_through() -> None:
    assert config_from_dict(RunConfig, {"extra": {"k": [1, "two"]}}).extra == {"k": [1, "two"]}


def test_config_from_dict_range_bounds_are_inclusive() -> None:
    config = config_from_dict(RunConfig, {"lidar": {"num_beams": 1, "max_range_m": 200}})
    assert (config.lidar.num_beams, config.lidar.max_range_m) == (1, 200.0)


@dataclass(frozen=True, kw_only=True)
class UnsupportedConfig:
    """A config with a field type the loader does not support."""

    ratio: complex = 1j


def test_config_from_dict_rejects_unsupported_field_type() -> None:
    with pytest.raises(TypeError, match="ratio: unsupported config field type"):
        config_from_dict(UnsupportedConfig, {"ratio": 2j})


def test_config_from_dict_top_level_not_mapping_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^<dict>: <top level>: expected a mapping, got list"):
        config_from_dict(RunConfig, [1])  # type: ignore[arg-type]


def test_config_from_dict_rejects_non_dataclass_type() -> None:
    with pytest.raises(TypeError, match="expected a dataclass type"):
        config_from_dict(dict, {})


# --- every broken input, against its exact message ---------------------------------------------


BAD_DICTS = [
    pytest.param(
        {"lidar": {"num_beam": 8}},
        "<dict>: unknown key 'lidar.num_beam'; did you mean 'num_beams'?",
        id="unknown-key-suggestion",
    ),
    pytest.param(
        {"zzz": 1},
        "<dict>: unknown key 'zzz'; valid keys here: name, seed, learning_rate",
        id="unknown-key-no-match",
    ),
    pytest.param(
        {"lidar": {"num_beams": "abc"}},
        "<dict>: lidar.num_beams: expected int, got str 'abc'",
        id="wrong-type",
    ),
    pytest.param({"seed": True}, "<dict>: seed: expected int, got bool True", id="bool-as-int"),
    pytest.param(
        {"learning_rate": False},
        "<dict>: learning_rate: expected float, got bool False",
        id="bool-as-float",
    ),
    pytest.param(
        {"learning_rate": "1e-3"},
        "<dict>: learning_rate: expected float, got str '1e-3'; YAML reads floats only with a dot",
        id="float-without-dot",
    ),
    pytest.param(
        {"learning_rate": "1.0e3"},
        "<dict>: learning_rate: expected float, got str '1.0e3'; YAML reads floats only with a dot",
        id="float-unsigned-exponent",
    ),
    pytest.param({"use_amp": 1}, "<dict>: use_amp: expected bool, got int 1", id="int-as-bool"),
    pytest.param(
        {"learning_rate": float("nan")},
        "<dict>: learning_rate: expected float, got float nan; NaN and infinity are not allowed",
        id="nan",
    ),
    pytest.param(
        {"lidar": {"max_range_m": float("-inf")}},
        "<dict>: lidar.max_range_m: expected float, got float -inf; NaN and infinity are not "
        "allowed",
        id="minus-infinity",
    ),
    pytest.param(
        {"lidar": {"num_beams": 0}},
        "<dict>: lidar.num_beams: expected a value in [1, inf], got 0",
        id="below-min",
    ),
    pytest.param(
        {"lidar": {"max_range_m": 250}},
        "<dict>: lidar.max_range_m: expected a value in [0.0, 200.0], got 250.0",
        id="above-max",
    ),
    pytest.param(
        {"camera": {"topic": "/c", "image_size_px": [0, 4]}},
        "<dict>: camera.image_size_px[0]: expected a value in [1, inf], got 0",
        id="tuple-item-below-min",
    ),
    pytest.param(
        {"camera": {}},
        "<dict>: missing required key 'camera.topic' (str)",
        id="missing-required",
    ),
    pytest.param(
        {"lidar": {"storage": "rosbag"}},
        "<dict>: lidar.storage: expected one of 'mcap', 'sqlite3', got str 'rosbag'",
        id="bad-literal",
    ),
    pytest.param(
        {"lidar": {"fov_deg": [1.0]}},
        "<dict>: lidar.fov_deg: expected tuple[float, float], got list [1.0] of length 1, "
        "need length 2",
        id="tuple-wrong-length",
    ),
    pytest.param(
        {"voxel_sizes_m": "0.1"},
        "<dict>: voxel_sizes_m: expected tuple[float, ...], got str '0.1'",
        id="str-as-tuple",
    ),
    pytest.param(
        {"voxel_sizes_m": [0.1, "x"]},
        "<dict>: voxel_sizes_m[1]: expected float, got str 'x'",
        id="tuple-item-wrong-type",
    ),
    pytest.param(
        {"tags": ["a", 3]}, "<dict>: tags[1]: expected str, got int 3", id="list-item-wrong-type"
    ),
    pytest.param(
        {"loss_weights": {"a": "heavy"}},
        "<dict>: loss_weights.a: expected float, got str 'heavy'",
        id="dict-value-wrong-type",
    ),
    pytest.param(
        {"lidar": [1, 2]},
        "<dict>: lidar: expected a mapping, got list [1, 2]",
        id="section-not-mapping",
    ),
    pytest.param({"out_dir": 5}, "<dict>: out_dir: expected Path, got int 5", id="int-as-path"),
    pytest.param(
        {"name": None}, "<dict>: name: expected str, got NoneType None", id="none-for-required-type"
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD_DICTS)
def test_config_from_dict_rejects_bad_input(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        config_from_dict(RunConfig, data)


def test_config_from_dict_missing_required_at_top_level() -> None:
    with pytest.raises(ConfigError, match=r"^src\.yaml: missing required key 'data_dir' \(Path\)$"):
        config_from_dict(RequiredConfig, {}, source="src.yaml")


def test_config_from_dict_error_is_a_relkd_error() -> None:
    with pytest.raises(RelkdError):
        config_from_dict(RunConfig, {"seed": "x"})


# --- validate() hook -----------------------------------------------------------------------------


def test_config_validate_accepts_valid_config() -> None:
    assert config_from_dict(WindowConfig, {"min_dt_ns": 5}) == WindowConfig(min_dt_ns=5)


def test_config_validate_error_becomes_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(OuterConfig, {"window": {"min_dt_ns": 20}}, source="w.yaml")
    assert str(info.value) == "w.yaml: window: min_dt_ns (20) must not exceed max_dt_ns (10)"
    assert isinstance(info.value.__cause__, ValueError)


def test_config_validate_error_at_top_level_names_source() -> None:
    with pytest.raises(ConfigError, match=r"^<dict>: min_dt_ns \(3\) must not"):
        config_from_dict(WindowConfig, {"min_dt_ns": 3, "max_dt_ns": 1})


# --- config_to_dict ------------------------------------------------------------------------------


def test_config_to_dict_gives_plain_yaml_safe_data() -> None:
    data = config_to_dict(_full_config())
    assert data["out_dir"] == "/tmp/out"
    assert data["lidar"] == {
        "num_beams": 64,
        "max_range_m": 120.0,
        "storage": "sqlite3",
        "fov_deg": [-25.0, 3.0],
    }
    assert data["camera"] == {"topic": "/cam/image", "image_size_px": [480, 640]}
    assert yaml.safe_load(yaml.safe_dump(data)) == data


@pytest.mark.parametrize("config", [RunConfig(), _full_config()], ids=["defaults", "full"])
def test_config_to_dict_round_trips(config: RunConfig) -> None:
    assert config_from_dict(RunConfig, config_to_dict(config)) == config


def test_config_to_dict_rejects_non_dataclass() -> None:
    with pytest.raises(TypeError, match="expected a dataclass instance"):
        config_to_dict(RunConfig)


# --- load_config -------------------------------------------------------------------------------


def test_load_config_reads_yaml_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed: 3\nlidar:\n  num_beams: 64\n  storage: sqlite3\n")
    config = load_config(RunConfig, path)
    assert config == RunConfig(seed=3, lidar=LidarConfig(num_beams=64, storage="sqlite3"))


def test_load_config_without_path_gives_defaults() -> None:
    assert load_config(RunConfig) == RunConfig()


def test_load_config_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(RunConfig, _write(tmp_path, "")) == RunConfig()


def test_load_config_overrides_parse_yaml_values(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed: 3\nlidar:\n  num_beams: 64\n")
    config = load_config(
        RunConfig,
        path,
        ["seed=5", "lidar.max_range_m=100", "voxel_sizes_m=[0.3, 0.4]", "note=a=b", "use_amp=true"],
    )
    assert config.seed == 5
    assert config.lidar == LidarConfig(num_beams=64, max_range_m=100.0)
    assert config.voxel_sizes_m == (0.3, 0.4)
    assert config.note == "a=b"  # only the first '=' splits
    assert config.use_amp is True


def test_load_config_override_creates_nested_section() -> None:
    config = load_config(RunConfig, None, ["camera.topic=/cam/front"])
    assert config.camera == CameraConfig(topic="/cam/front")


def test_load_config_override_replaces_null_section(tmp_path: Path) -> None:
    path = _write(tmp_path, "camera: null\n")
    config = load_config(RunConfig, path, ["camera.topic=/cam"])
    assert config.camera == CameraConfig(topic="/cam")


def test_load_config_override_unknown_key_is_rejected() -> None:
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "<defaults> with overrides ['lidar.num_beam=8']: unknown key 'lidar.num_beam'; "
            "did you mean 'num_beams'?"
        ),
    ):
        load_config(RunConfig, None, ["lidar.num_beam=8"])


def test_load_config_override_wrong_type_names_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed: 1\n")
    with pytest.raises(ConfigError, match=r"with overrides .*: seed: expected int, got str 'abc'"):
        load_config(RunConfig, path, ["seed=abc"])


def test_load_config_override_into_scalar_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed: 1\n")
    with pytest.raises(ConfigError, match=r"'seed\.x=1': 'seed' holds a int, not a mapping$"):
        load_config(RunConfig, path, ["seed.x=1"])


BAD_FILES = [
    pytest.param(
        "lidar:\n  num_beams: [1, 2\n", (), "config.yaml: invalid YAML: ", id="yaml-syntax"
    ),
    pytest.param(
        "- 1\n- 2\n",
        (),
        "config.yaml: expected a mapping of keys at the top level, got list",
        id="top-level-list",
    ),
    pytest.param(
        "just text\n",
        (),
        "config.yaml: expected a mapping of keys at the top level, got str",
        id="top-level-scalar",
    ),
    pytest.param(
        "lidar:\n  num_beam: 8\n",
        (),
        "config.yaml: unknown key 'lidar.num_beam'; did you mean 'num_beams'?",
        id="unknown-key-in-file",
    ),
    pytest.param(
        "lidar:\n  num_beams: abc\n",
        (),
        "config.yaml: lidar.num_beams: expected int, got str 'abc'",
        id="wrong-type-in-file",
    ),
    pytest.param(
        "seed: 1\n",
        ("seed",),
        "config.yaml: override 'seed': expected 'dotted.key=value', e.g. 'lidar.num_beams=32'",
        id="override-without-equals",
    ),
    pytest.param(
        "seed: 1\n",
        ("=3",),
        "config.yaml: override '=3': expected 'dotted.key=value'",
        id="override-empty-key",
    ),
    pytest.param(
        "seed: 1\n",
        ("lidar..num_beams=3",),
        "config.yaml: override 'lidar..num_beams=3': expected 'dotted.key=value'",
        id="override-empty-key-part",
    ),
    pytest.param(
        "seed: 1\n",
        ("tags=[1,",),
        "config.yaml: override 'tags=[1,': value is not valid YAML",
        id="override-bad-yaml",
    ),
]


@pytest.mark.parametrize(("text", "overrides", "message"), BAD_FILES)
def test_load_config_rejects_bad_file(
    tmp_path: Path, text: str, overrides: tuple[str, ...], message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match="^" + re.escape(str(tmp_path) + "/" + message)):
        load_config(RunConfig, path, overrides)


def test_load_config_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: config file not found")):
        load_config(RunConfig, path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x03}q\x00.", "not a YAML text file (not UTF-8: byte 0 is 0x80)"),
        (b"seed: 1\n\x00\x01", "invalid YAML"),
    ],
    ids=["not-utf8", "control-characters"],
)
def test_load_config_binary_file_is_rejected(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: {message}")):
        load_config(RunConfig, path)


def test_load_config_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: cannot read config file")):
        load_config(RunConfig, tmp_path)


# --- save_config -------------------------------------------------------------------------------


def test_save_config_round_trips_through_file(tmp_path: Path) -> None:
    path = tmp_path / "resolved.yaml"
    save_config(_full_config(), path)
    assert load_config(RunConfig, path) == _full_config()
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == config_to_dict(_full_config())


def test_save_config_replaces_file_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "resolved.yaml"
    path.write_text("old: content\n", encoding="utf-8")
    save_config(RunConfig(seed=11), str(path))
    assert load_config(RunConfig, path) == RunConfig(seed=11)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resolved.yaml"]


def test_save_config_failure_keeps_old_file_and_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "resolved.yaml"
    path.write_text("seed: 1\n", encoding="utf-8")

    def fail_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    # Fail at the last step, after the temp file is written: the old file must survive.
    monkeypatch.setattr(config_module.os, "replace", fail_replace)
    with pytest.raises(OSError, match="disk full"):
        save_config(RunConfig(seed=2), path)
    assert path.read_text(encoding="utf-8") == "seed: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resolved.yaml"]
