"""Tasks: one module each (``semseg``, ``depth``, ``normals``), found by :func:`names` / :func:`get`.

Every module of this package other than ``base`` that defines ``TASK`` (a
:class:`~fastmtl.tasks.base.Task` subclass) is a task, registered under ``TASK.name``: adding a task
is adding one module. Models, losses, metrics, the trainer, ``eval``, ``predict``, ``export``,
TensorBoard, the weighting engine and the data transforms loop over the run's tasks
(``Config.tasks``, flag ``--tasks``).
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type

from .base import DEFAULT_WEIGHT, Task, TaskOption

__all__ = ["DEFAULT_TASKS", "DEFAULT_WEIGHT", "Task", "TaskOption", "get", "names", "build_tasks", "task_states",
           "outputs_desc", "parse_tasks", "check_available"]

DEFAULT_TASKS = ("semseg", "depth")  # the report's pair: ``Config.tasks``'s default


@functools.lru_cache(maxsize=1)
def _registry() -> Dict[str, Type[Task]]:
    found: Dict[str, Type[Task]] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name == "base" or module_info.name.startswith("_"):
            continue
        task = getattr(importlib.import_module(f"{__name__}.{module_info.name}"), "TASK", None)
        if task is not None:
            found[task.name] = task
    return found


def names() -> Tuple[str, ...]:
    """The registered task names, sorted."""
    return tuple(sorted(_registry()))


def get(name: str) -> Type[Task]:
    """The :class:`Task` class named ``name``; ValueError listing the valid names otherwise."""
    try:
        return _registry()[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(names())}") from None


def is_task(name: str) -> bool:
    """Whether ``name`` (e.g. a sample-dict key) is a registered task."""
    return name in _registry()


def parse_tasks(text: str) -> Tuple[str, ...]:
    """``"semseg,depth,normals"`` -> ``("semseg", "depth", "normals")``; checks names and duplicates."""
    items = tuple(t.strip() for t in str(text).split(",") if t.strip())
    check_task_names(items)
    return items


def check_task_names(items: Sequence[str]) -> None:
    """ValueError (naming ``--tasks``) for an empty list, an unknown name or a repeated one."""
    if not items:
        raise ValueError(f"--tasks needs at least one task; valid tasks: {', '.join(names())}")
    for t in items:
        if not is_task(t):
            raise ValueError(f"--tasks: unknown task {t!r}; valid tasks: {', '.join(names())}")
    repeated = sorted({t for t in items if list(items).count(t) > 1})
    if repeated:
        raise ValueError(f"--tasks names {', '.join(repeated)} more than once")


def check_available(tasks: Iterable[str], available: Iterable[str], dataset: str) -> None:
    """ValueError ``--tasks normals: dataset X has no normals`` for a task whose target the dataset lacks."""
    have = set(available)
    missing = [t for t in tasks if t not in have]
    if missing:
        raise ValueError(f"--tasks {','.join(missing)}: dataset {dataset} has no {', '.join(missing)} "
                         f"(it has: {', '.join(sorted(have)) or 'no targets'})")


def build_tasks(cfg, info, saved: Optional[Mapping[str, Any]] = None) -> List[Task]:
    """The run's task objects in ``cfg.tasks`` order (see :meth:`Task.for_run`); ``saved``: a
    checkpoint, whose entries under the tasks' :attr:`~Task.state_key` rebuild their state."""
    out = []
    for name in cfg.tasks:
        cls = get(name)
        state = saved.get(cls.state_key) if saved is not None and cls.state_key else None
        out.append(cls.for_run(cfg, info, state))
    return out


def task_states(tasks: Sequence[Task]) -> Dict[str, Any]:
    """``{state_key: state}`` of the tasks that have one: the checkpoint's task entries."""
    return {t.state_key: t.state() for t in tasks if t.state_key}


def outputs_desc(tasks: Sequence[Task]) -> Dict[str, int]:
    """``{task: head channels}``, the models' ``outputs_desc``."""
    return {t.name: t.channels for t in tasks}
