"""The control files' JSON (config, sweep file, dataset ``meta.json``, camera json): parsed with
bounded nesting and a JSON object at the top; every error a one-line ValueError naming the file."""
from __future__ import annotations

import json
import re
from typing import Any, Dict

MAX_DEPTH = 32  # the deepest a control file nests objects / arrays (the real ones nest 3 deep)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str) -> int:
    """How deep the objects / arrays of JSON ``text`` nest (brackets inside strings do not count);
    linear, no recursion, so it can run before the parser."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def value_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep an already parsed value (dicts / lists) nests, counting up to ``limit + 1`` (a TOML
    file's table); iterative."""
    deepest, todo = 0, [(value, 1)]
    while todo and deepest <= limit:
        v, d = todo.pop()
        children = list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is not None:
            deepest = max(deepest, d)
            todo += [(c, d + 1) for c in children]
    return deepest


def check_depth(depth: int, where: str) -> None:
    """ValueError naming ``where`` when ``depth`` is over :data:`MAX_DEPTH`."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested more than {MAX_DEPTH} levels deep; refused")


def loads_object(text: str, where: str, **json_options: Any) -> Dict[str, Any]:
    """The JSON object in ``text`` (``json_options``: :func:`json.loads`' hooks); ValueError naming
    ``where`` for bad JSON, nesting over :data:`MAX_DEPTH` or a top level that is not an object."""
    check_depth(nesting_depth(text), where)
    try:
        data = json.loads(text, **json_options)
    except ValueError as err:  # JSONDecodeError and what the hooks raise
        raise ValueError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: the top level must be a JSON object {{...}}, got {type(data).__name__}")
    return data
