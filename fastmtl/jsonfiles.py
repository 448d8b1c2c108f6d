"""JSON files that survive a crash: written atomically (temp file + fsync + rename); JSON Lines
read with the torn-line rule (a last line cut short by a crash is dropped with a warning)."""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash at any moment leaves the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
