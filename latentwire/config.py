"""Typed run configs: dataclasses built strictly from YAML/JSON dicts.

``from_dict(Cls, data, where)`` turns nested dicts into nested dataclasses, checks the types of
leaves, and raises :class:`ConfigError` naming the exact key path (``eval.max_new_tokens``) for an
unknown key, a missing required key or a value of the wrong type. Defaults live on the dataclasses
(one source of truth); YAML only overrides them.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is unknown, missing or of the wrong type; the message names the key path."""


class FieldError(ValueError):
    """A ``validate()`` check on one field; :func:`from_dict` prefixes the full key path."""

    def __init__(self, key: str, detail: str):
        super().__init__(f"{key}: {detail}")
        self.key, self.detail = key, detail


def must(ok: bool, key: str, value: Any, rule: str) -> None:
    """In a ``validate()``: unless ``ok``, fail as ``<path>.<key>: must be <rule>, got <value>``."""
    if not ok:
        raise FieldError(key, f"must be {rule}, got {value!r}")


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file, naming the file on a syntax error."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types are errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{', '.join(f'{where}.{k}' for k in unknown)}: unknown key(s); "
            f"allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except FieldError as e:  # one field of this dataclass: its full key path and value
            raise ConfigError(f"{where}.{e.key}: {e.detail}") from e
        except ConfigError as e:  # a check that named the key its own way: give it the full path
            raise ConfigError(_under(where, str(e))) from e
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from e
    return obj


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} matches none of {tp} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str) and _is_number(value):
            raise ConfigError(
                f"{key}: expected a number, got the string {value!r}: YAML reads an exponent without a "
                f"dot ({value}) as text; write it with a dot and a signed exponent, e.g. 1.0e-3"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp}")


def _under(where: str, msg: str) -> str:
    """``msg`` (from a ``validate()`` of the dataclass at ``where``) with the full key path in front."""
    if msg.startswith(where):
        return msg
    last = where.rsplit(".", 1)[-1].rsplit(": ", 1)[-1]  # "latent" of "latent.experiments.e.latent"
    if msg.startswith((f"{last}.", f"{last}:")):
        return where + msg[len(last) :]
    return f"{where}: {msg}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_dict(obj: Any) -> Any:
    """The plain-dict form of a (nested) config dataclass, for provenance and JSON."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def merge_configs(base: dict, overlay: dict) -> dict:
    """Snakemake's ``--configfile A B`` merge: nested mappings update key by key, anything else replaces."""
    out = dict(base)
    for k, v in overlay.items():
        out[k] = merge_configs(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
