"""Strict loading of frozen, keyword-only config dataclasses from YAML.

A config is a tree of frozen dataclasses whose field names equal the YAML keys. Loading is strict:
unknown keys are rejected with the closest valid key suggested, every value is type-checked
against its annotation (no silent coercion except int -> float; floats must be finite), ranges
declared with :func:`bounded` are enforced, and a dataclass may add cross-field checks in
``validate()``. Every error is a :class:`~relkd_core.errors.ConfigError` naming the source and
the dotted key.

Supported field types: ``int``, ``float``, ``str``, ``bool``, ``pathlib.Path``, ``Literal[...]``,
``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]``, ``dict[str, X]``, nested dataclasses
and ``Any``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import pathlib
import re
import types
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import yaml

from relkd_core.atomic import write_text_atomic
from relkd_core.errors import ConfigError

__all__ = ["bounded", "config_from_dict", "config_to_dict", "load_config", "save_config"]

T = TypeVar("T")

_NONE_TYPE = type(None)
# Floats that YAML 1.1 (PyYAML) reads as strings: it needs a dot and a signed exponent.
_YAML11_STR_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


def bounded(default: Any, *, min: float | None = None, max: float | None = None) -> Any:
    """Declare a dataclass field with a default and an inclusive range checked at load time.

    Usage: ``num_beams: int = bounded(32, min=1)``. The range applies to a number, or to every
    number of a tuple/list (``image_size_px: tuple[int, int] = bounded((224, 224), min=1)``).
    The default must be immutable (a scalar or a tuple), as for any dataclass ``default=``.
    """
    metadata: dict[str, float] = {}
    if min is not None:
        metadata["min"] = min
    if max is not None:
        metadata["max"] = max
    return dataclasses.field(default=default, metadata=metadata)


def load_config(
    cls: type[T], path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> T:
    """Load ``cls`` from a YAML file, apply ``dotted.key=value`` overrides, and validate it.

    ``path=None`` starts from an empty mapping, i.e. all defaults. Override values are parsed
    with ``yaml.safe_load`` (``a.b=3`` gives int 3, ``a.c=[1,2]`` a list, ``a.d=null`` None).
    Raises ConfigError for a missing or unreadable file, invalid YAML, a top level that is not a
    mapping, a malformed override, or any value :func:`config_from_dict` rejects.
    """
    source = "<defaults>" if path is None else os.fspath(path)
    data: dict[str, Any] = {} if path is None else _read_yaml(pathlib.Path(path))
    for override in overrides:
        _apply_override(data, override, source)
    if overrides:
        # A bad value may come from the file or from an override: say both, so the user knows
        # where to look.
        source = f"{source} with overrides {list(overrides)}"
    return config_from_dict(cls, data, source=source)


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "<dict>") -> T:
    """Build the dataclass ``cls`` (recursively) from a plain mapping, checking every value.

    ``source`` names where ``data`` came from and prefixes every error message. Raises
    ConfigError for unknown or missing keys, wrong types, out-of-range values and failed
    ``validate()`` hooks; raises TypeError if ``cls`` itself is not a supported dataclass.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config_from_dict: expected a dataclass type, got {cls!r}")
    return cast(T, _build(cls, data, "", source))


def config_to_dict(config: Any) -> dict[str, Any]:
    """Turn a config dataclass into plain YAML/JSON-safe data (Paths -> str, tuples -> lists).

    The inverse of :func:`config_from_dict`: ``config_from_dict(type(c), config_to_dict(c)) == c``.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config_to_dict: expected a dataclass instance, got {config!r}")
    # Only init fields: the others are derived, and config_from_dict would reject them as unknown.
    return {
        f.name: _to_plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init
    }


def save_config(config: Any, path: str | os.PathLike[str]) -> None:
    """Write ``config`` as YAML to ``path`` atomically: a crash leaves the old file or the new one.

    See :mod:`relkd_core.atomic`.
    """
    path = pathlib.Path(path)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    write_text_atomic(path, text)


# --- reading and overrides -------------------------------------------------------------------


def _read_yaml(path: pathlib.Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: config file not found; check the path") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8: byte {err.start} is "
                          f"0x{err.object[err.start]:02x})") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if data is None:  # an empty file means "all defaults"
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}"
        )
    return data


def _apply_override(data: dict[str, Any], override: str, source: str) -> None:
    key, sep, raw = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(
            f"{source}: override {override!r}: expected 'dotted.key=value', "
            "e.g. 'lidar.num_beams=32'"
        )
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: override {override!r}: value is not valid YAML") from err
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:  # e.g. an Optional section set to null in the file
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"{source}: override {override!r}: {where!r} holds a {type(child).__name__}, "
                "not a mapping"
            )
        node = child
    node[parts[-1]] = value


# --- building --------------------------------------------------------------------------------


def _build(cls: Any, data: Any, prefix: str, source: str) -> Any:
    where = prefix or "<top level>"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {_describe(data)}")
    try:
        hints = get_type_hints(cls)
    except NameError as err:  # a string annotation naming a class the module cannot see
        raise TypeError(f"cannot resolve the annotations of {cls.__qualname__}: {err}") from err
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{source}: {_unknown_key(prefix, str(key), list(fields))}")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise ConfigError(
                    f"{source}: missing required key {key!r} ({_type_name(hints[name])})"
                )
            continue
        value = _convert(hints[name], data[name], key, source)
        _check_range(field, value, key, source)
        kwargs[name] = value
    try:
        config = cls(**kwargs)
        validate = getattr(config, "validate", None)
        if callable(validate):
            validate()
    except ValueError as err:  # from __post_init__ or validate(): a cross-field check failed
        raise ConfigError(f"{source}: {prefix + ': ' if prefix else ''}{err}") from err
    return config


def _unknown_key(prefix: str, key: str, valid: list[str]) -> str:
    dotted = f"{prefix}.{key}" if prefix else key
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        return f"unknown key {dotted!r}; did you mean {close[0]!r}?"
    return f"unknown key {dotted!r}; valid keys here: {', '.join(valid) or '(none)'}"


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in its final form."""

    def fail(extra: str = "") -> ConfigError:
        got = _describe(value)
        return ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {got}{extra}")

    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        # Compare types too: True == 1 and 1 == 1.0, but neither should pass for the other.
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        raise fail()
    if origin is Union or origin is types.UnionType:
        options = [arg for arg in args if arg is not _NONE_TYPE]
        if value is None and len(options) < len(args):
            return None
        if len(options) != 1:
            raise TypeError(f"{key}: only `X | None` unions are supported, got {tp!r}")
        return _convert(options[0], value, key, source)  # X's own error is the precise one
    if origin in (tuple, list):
        # Not Sequence: a str is one too, but never a sensible list of values.
        if not isinstance(value, (list, tuple)):
            raise fail()
        fixed = origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)
        if fixed and len(value) != len(args):
            raise fail(f" of length {len(value)}, need length {len(args)}")
        item_types = args if fixed else (args[0],) * len(value)
        items = [
            _convert(item_tp, item, f"{key}[{i}]", source)
            for i, (item_tp, item) in enumerate(zip(item_types, value, strict=True))
        ]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail()
        key_tp, item_tp = args
        return {
            _convert(key_tp, k, f"{key}.{k}", source): _convert(item_tp, v, f"{key}.{k}", source)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)
    if isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        if isinstance(value, (str, os.PathLike)):
            return tp(value)
        raise fail()
    if tp in (bool, int, float, str):
        # bool is a subclass of int, but a YAML `true` given for a count is a mistake.
        if isinstance(value, bool) and tp is not bool:
            raise fail()
        if tp is float and isinstance(value, float) and not math.isfinite(value):
            # NaN passes every range check (each comparison is false) and inf none that
            # matters here; torch would fail on either much later, with a traceback.
            raise fail("; NaN and infinity are not allowed")
        if isinstance(value, tp) or (tp is float and isinstance(value, int)):
            return tp(value)
        if tp is float and isinstance(value, str) and _YAML11_STR_FLOAT.fullmatch(value):
            raise fail("; YAML reads floats only with a dot and a signed exponent, e.g. 1.0e-3")
        raise fail()
    raise TypeError(f"{key}: unsupported config field type {tp!r}")


def _check_range(field: dataclasses.Field[Any], value: Any, key: str, source: str) -> None:
    low, high = field.metadata.get("min"), field.metadata.get("max")
    if low is None and high is None:
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_range(field, item, f"{key}[{i}]", source)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return  # None of an Optional, or a non-number: the type check already had its say
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"{source}: {key}: expected a value in {bounds}, got {value!r}")


# --- small helpers ---------------------------------------------------------------------------


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin is Union or origin is types.UnionType:
        return " | ".join(_type_name(arg) for arg in args)
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else _type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', repr(origin))}[{inner}]"
    if tp is _NONE_TYPE:
        return "None"
    return getattr(tp, "__name__", repr(tp))
