"""A control file's field value checked against its dataclass field's type (``int``, ``float``,
``bool``, ``str``, ``Optional``, ``Tuple``, ``Dict``): numbers given as text are converted, anything
else that does not fit is a ConfigError naming the field."""
from __future__ import annotations

import math
import typing
from typing import Any, Dict

from .errors import ConfigError

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def field_types(cls) -> Dict[str, Any]:
    """``{field name: type}`` of a dataclass (its annotations resolved)."""
    return typing.get_type_hints(cls)


def check_value(name: str, value: Any, kind: Any) -> Any:
    """``value`` of field ``name`` as type ``kind``; ConfigError ``field NAME: ...`` if it is not one."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return check_value(name, value, next(a for a in args if a is not type(None)))
    if kind is typing.Any:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # old config files
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _bad(name, value, "true or false")
    if kind is int:
        number = _number(name, value, "an integer")
        if not float(number).is_integer():
            raise _bad(name, value, "an integer")
        return int(number)
    if kind is float:
        return float(_number(name, value, "a number"))
    if kind is str:
        if not isinstance(value, str):
            raise _bad(name, value, "text")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _bad(name, value, "a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(check_value(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _bad(name, value, f"a list of {len(args)} values")
        return tuple(check_value(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(name, value, "an object {...}")
        return {str(k): check_value(f"{name}[{k!r}]", v, args[1]) for k, v in value.items()}
    raise TypeError(f"field {name}: no check for type {kind!r}")  # a field type this module does not know


def _number(name: str, value: Any, expected: str) -> float:
    """A finite int/float from ``value`` (a number, or a number as text)."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                raise _bad(name, value, expected) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(name, value, expected)
    if not math.isfinite(value):
        raise _bad(name, value, f"{expected}, finite")
    return value


def _bad(name: str, value: Any, expected: str) -> ConfigError:
    shown = repr(value)
    return ConfigError(f"field {name}: must be {expected}, got {shown if len(shown) < 60 else shown[:57] + '...'}")
