"""The files fastmtl reads and writes that must not break: control files (config, sweep file,
dataset ``meta.json``, camera json) parsed with bounded nesting and an object at the top; run files
written atomically (temp file + fsync + rename); JSON Lines read with the torn-line rule (a last line
cut short by a crash is dropped with a warning). Every error a one-line ValueError naming the file."""
from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Union

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


def write_atomic(path: Union[str, Path], write: Callable[[IO], None], binary: bool = False) -> None:
    """``write(file)`` into a temporary file beside ``path``, then fsync and rename it over ``path``
    (and fsync the folder): a crash at any moment leaves the old file or the new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text_atomic(path: Union[str, Path], text: str) -> None:
    """:func:`write_atomic` of ``text``."""
    write_atomic(path, lambda f: f.write(text))


def write_json_atomic(path: Path, obj: Any, indent: int = 2) -> None:
    """:func:`write_text_atomic` of ``obj`` as JSON."""
    write_text_atomic(path, json.dumps(obj, indent=indent))


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """The records of a JSON Lines file (blank lines ignored). A last line that is not valid JSON
    (torn by a crash while it was appended) is dropped with a warning; an invalid line before it is
    a ``ValueError`` naming the file and the line."""
    path = Path(path)
    lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for k, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if k < len(lines) - 1:
                raise ValueError(f"{path}: line {number} is not valid JSON (only a last line torn by a "
                                 f"crash is dropped)") from None
            warnings.warn(f"{path}: dropped its last line {number}, torn (not valid JSON: the process was "
                          f"stopped while writing it)", stacklevel=2)
    return records


def read_json(path: Path, what: str) -> Any:
    """The JSON of ``path``; an empty or torn file is a ``ValueError`` naming it and ``what`` it is."""
    path = Path(path)
    text = path.read_text()
    try:
        return json.loads(text)
    except ValueError as e:
        state = "empty" if not text.strip() else f"not valid JSON ({e})"
        raise ValueError(f"{path}: {what} is {state}; was the process stopped while writing it?") from None
