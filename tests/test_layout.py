"""The package's layout rules: task names live in fastmtl/tasks/ (and the data readers of their files)."""
import ast
from pathlib import Path

import fastmtl
from fastmtl import tasks

PACKAGE = Path(fastmtl.__file__).parent
TASK_NAME_HOMES = ("tasks", "data")


def test_task_names_appear_only_in_the_tasks_and_data_packages():
    names = set(tasks.names())
    assert names  # the registry found the task modules
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in TASK_NAME_HOMES:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, "task name literals outside fastmtl/tasks/ and fastmtl/data/:\n" + "\n".join(found)


def test_the_layout_check_sees_a_literal(tmp_path):
    tree = ast.parse('x = {"depth": 1}')
    assert any(isinstance(n, ast.Constant) and n.value in set(tasks.names()) for n in ast.walk(tree))
