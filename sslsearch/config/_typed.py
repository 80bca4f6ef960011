"""Frozen dataclasses from plain mappings (YAML, JSON, dicts), rejecting what they don't know.

Every error names where it happened ("recipe.lr") so that the CLI can print one clear line.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from sslsearch.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config value is wrong. ``key`` is its dotted path; ``where`` the file, if any."""

    def __init__(self, key: str, message: str, where: str | None = None) -> None:
        self.key = key
        self.message = message
        self.where = where
        super().__init__(self._text())

    def _text(self) -> str:
        loc = f"{self.where}: " if self.where else ""
        key = f"key '{self.key}': " if self.key else ""
        return f"{loc}{key}{self.message}"

    def located(self, where: str) -> ConfigError:
        return ConfigError(self.key, self.message, where)

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str, str | None]]:
        # an error raised in a Ray worker travels pickled: keep its message, not a TypeError
        return (ConfigError, (self.key, self.message, self.where))


def did_you_mean(name: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _join(prefix: str, key: str) -> str:
    if not key:
        return prefix
    if not prefix:
        return key
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true/false",
        }.get(tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert (lists to tuples, etc.)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        expected = " or ".join(_type_name(a) for a in args)
        raise ConfigError(key, f"expected {expected}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            names = [str(a) for a in args]
            hint = did_you_mean(str(value), names)
            raise ConfigError(key, f"must be one of {', '.join(names)}, got {value!r}{hint}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_mapping(tp, value, key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): convert(v, vt, _join(key, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    return value


def from_mapping(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are ConfigErrors."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(prefix, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        if key not in fields:
            raise ConfigError(_join(prefix, key), "unknown key" + did_you_mean(key, fields))
        kwargs[key] = convert(value, hints[key], _join(prefix, key))
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(_join(prefix, missing[0]), "required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        try:
            check()
        except ConfigError as e:
            raise ConfigError(_join(prefix, e.key), e.message) from None
    return obj


def to_mapping(obj: Any) -> Any:
    """Plain dicts/lists (YAML/JSON-ready) from a dataclass tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_mapping(v) for k, v in obj.items()}
    return obj
