"""Typed settings from mappings: one loader for the frozen config dataclasses of every stage.

A config is built from layers (shipped defaults, a YAML or TOML file, ``--set key=value`` options). Every
value is checked against its field's declared type before the dataclass's own validation runs (a float
field takes finite numbers only: NaN and infinity are refused, since every range check passes them or fails
them in surprising ways), so a typo or a bad value fails before any work starts, with an error naming the key and the file or option it came
from. annotate (``AnnotateConfig``) and train (``TrainConfig``) load their settings through here.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml


class ConfigError(ValueError):
    """A configuration file or override is malformed; the message names the key."""


def read_file(path: str | Path) -> dict[str, Any]:
    """A config file as a mapping; ``.toml`` files are TOML, anything else YAML."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file ({error.strerror or error})") from error
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as error:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'YAML'}: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def apply_override(root: type, data: dict[str, Any], item: str, option: str = "--set") -> dict[str, Any]:
    """``data`` with ``section.key=value`` set; the key is checked against ``root``'s dataclasses, the value parsed
    for its type. Errors name ``option`` and the key."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{option} {item!r}: expected KEY=VALUE, e.g. gate.confidence=0.4")
    parts = key.split(".")
    target = _field_type(root, parts, f"{option} {key}")
    if raw.strip() in ("null", "~") and _strip_optional(target) is not target:
        value = None
    else:
        value = raw if _is_text(target) and not _quoted(raw) else _parse_value(raw, key, option)
    if not (isinstance(target, type) and dataclasses.is_dataclass(target)):
        _coerce(target, value, option, key)  # a type error names the option, not the file
    out = dict(data)
    node = out
    for part in parts[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, Mapping) else {}
        node = node[part]
    node[parts[-1]] = value
    return out


def overrides(root: type, items: Sequence[str], option: str = "--set") -> dict[str, Any]:
    """The nested mapping of ``KEY=VALUE`` items for ``root``, each checked as :func:`apply_override` does."""
    data: dict[str, Any] = {}
    for item in items:
        data = apply_override(root, data, item, option)
    return data


def build(cls: type, data: Any, source: str, key: str = "") -> Any:
    """An instance of dataclass ``cls`` from a mapping, every value checked against its field type."""
    where = f"{source}: {key}" if key else source
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        name = f"{key}.{unknown[0]}" if key else unknown[0]
        raise ConfigError(f"{source}: {name}: unknown key; {key or 'the top level'} knows {sorted(fields)}")
    kwargs = {name: _coerce(hints[name], value, source, f"{key}.{name}" if key else name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        message = str(error)
        named = key and message.startswith(f"{key}.")
        raise ConfigError(f"{source}: {message}" if named else f"{where}: {message}") from error


def to_mapping(config: Any) -> Any:
    """A dataclass (tree) as plain JSON/YAML-friendly values: tuples become lists."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_mapping(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_mapping(v) for v in config]
    if isinstance(config, Mapping):
        return {str(k): to_mapping(v) for k, v in config.items()}
    if isinstance(config, Path):
        return str(config)
    return config


def check_layer(cls: type, data: Mapping[str, Any], source: str, key: str = "") -> None:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        if name not in names:
            raise ConfigError(f"{source}: {sub}: unknown key; {key or 'the top level'} knows {names}")
        target = hints[name]
        if isinstance(target, type) and dataclasses.is_dataclass(target) and isinstance(value, Mapping):
            check_layer(target, value, source, sub)
        else:
            _coerce(target, value, source, sub)


def merge(base: dict[str, Any], extra: Mapping[str, Any], key: str = "") -> dict[str, Any]:
    out = dict(base)
    for name, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(name), Mapping):
            out[name] = merge(out[name], value, f"{key}.{name}" if key else name)
        else:
            out[name] = value
    return out


def _field_type(cls: type, parts: list[str], where: str) -> Any:
    """The declared type at a dotted key path, or a ConfigError naming the first unknown part."""
    current: Any = cls
    for i, part in enumerate(parts):
        current = _strip_optional(current)
        if not (isinstance(current, type) and dataclasses.is_dataclass(current)):
            if typing.get_origin(current) in (dict, Mapping):
                return typing.Any
            raise ConfigError(f"{where}: {'.'.join(parts[:i])} is a value, it has no key {part!r}")
        names = [f.name for f in dataclasses.fields(current) if f.init]
        if part not in names:
            raise ConfigError(f"{where}: unknown key {'.'.join(parts[: i + 1])!r}; known here: {names}")
        current = typing.get_type_hints(current)[part]
    return current


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, source, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{source}: {key}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise _type_error(source, key, f"one of {list(args)}", value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, source, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(source, key, "true or false", value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(source, key, "an integer", value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _type_error(source, key, "a finite number", value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(source, key, "a string", value)
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _type_error(source, key, "a path", value)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _type_error(source, key, "a list", value)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _type_error(source, key, f"a list of {len(args)} values", value)
            return tuple(_coerce(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _type_error(source, key, "a mapping", value)
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(value_type, v, source, f"{key}.{k}") for k, v in value.items()}
    return value


def _type_error(source: str, key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{source}: {key}: expected {expected}, got {value!r}")


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _is_text(tp: Any) -> bool:
    """Whether a field takes free text, so that ``--set prompts.positive=yes`` stays the string 'yes'."""
    tp = _strip_optional(tp)
    return tp is str or tp is Path or (typing.get_origin(tp) is typing.Literal and all(isinstance(a, str) for a in typing.get_args(tp)))


def _quoted(raw: str) -> bool:
    raw = raw.strip()
    return len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""


def _parse_value(raw: str, key: str, option: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"{option} {key}: cannot parse value {raw!r} ({error})") from error
