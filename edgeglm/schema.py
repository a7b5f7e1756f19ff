"""Typed JSON: build dataclasses from parsed JSON, with errors that name the field.

Hardware profiles and recipes are files people write by hand, so a typo must
fail loudly and point at the line's key (``gpus[1].memory_total_bytes: expected
an integer, got "24GB"``) instead of surfacing later as a wrong plan. One small
walker over dataclass type hints does this for every file format we read, so
the dataclasses are the schema; there is no second description to drift.

Keys starting with ``_`` are comments (``"_source"``, ``"_note"``) and are
ignored; any other unknown key is an error listing the known ones.
"""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from edgeglm.errors import EdgeGLMError, UsageError

T = TypeVar("T")


class SchemaError(ValueError):
    """Internal: a value does not fit its declared type (re-raised as the caller's error)."""


def load_json_file(path: Path, cls: type[T], *, error: type[EdgeGLMError] = UsageError) -> T:
    """Read ``path`` and build ``cls`` from it; every problem becomes ``error``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from e
    return build(cls, data, where=str(path), error=error)


def build(cls: type[T], data: Any, *, where: str = "", error: type[EdgeGLMError] = UsageError) -> T:
    try:
        return _convert(cls, data, "")  # type: ignore[no-any-return]
    except SchemaError as e:
        raise error(f"{where}: {e}" if where else str(e)) from None


def _label(path: str) -> str:
    return path or "(top level)"


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _convert(opt, value, path)
            except SchemaError as e:
                errors.append(str(e))
        raise SchemaError(errors[0] if len(errors) == 1 else f"{_label(path)}: {value!r} fits none")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise SchemaError(
                f"{_label(path)}: {value!r} is not one of {', '.join(map(repr, allowed))}"
            )
        return value
    if origin is list or origin is tuple:
        if not isinstance(value, list):
            raise SchemaError(f"{_label(path)}: expected a list, got {_kind(value)}")
        (item,) = get_args(tp)[:1]
        items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{_label(path)}: expected an object, got {_kind(value)}")
        _, vt = get_args(tp)
        return {str(k): _convert(vt, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp, value, path)
    return _scalar(tp, value, path)


def _scalar(tp: Any, value: Any, path: str) -> Any:
    # bool is an int in Python; a JSON true where a count belongs is a mistake.
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    else:
        raise SchemaError(f"{_label(path)}: unsupported field type {tp!r}")
    want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]
    raise SchemaError(f"{_label(path)}: expected {want}, got {_kind(value)}")


def _dataclass(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise SchemaError(f"{_label(path)}: expected an object, got {_kind(value)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in value if k not in fields and not str(k).startswith("_")]
    if unknown:
        raise SchemaError(
            f"{_label(path)}: unknown key {unknown[0]!r}; known keys: {', '.join(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(f"{sub}: missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # __post_init__ checks
        raise SchemaError(f"{_label(path)}: {e}") from e


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    return {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )
