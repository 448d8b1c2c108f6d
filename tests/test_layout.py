"""The package's layout rules: task names live in fastmtl/tasks/ (and the data readers of their files); every
kernel op is a package of the same files under fastmtl/kernels/."""
import ast
import importlib
from pathlib import Path

import fastmtl
from fastmtl import tasks
from fastmtl.kernels import selfcheck

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


KERNEL_OP_FILES = {"__init__.py", "reference.py", "kernels.py", "launch.py", "op.py", "probe.py"}
KERNEL_OP_NAMES = {  # what each op package offers (the names its single module offered before the split)
    "aspp": ["MAX_BRANCHES_PER_LAUNCH", "aspp_project", "aspp_project_backward", "aspp_project_backward_reference",
             "aspp_project_backward_triton", "aspp_project_forward_triton", "aspp_project_probe",
             "aspp_project_reference"],
    "bn_relu": ["MAX_INNER_CHANNELS", "MERGE_SHARE", "batch_norm_relu", "bn_relu", "bn_relu_backward",
                "bn_relu_backward_reference", "bn_relu_backward_triton", "bn_relu_forward_triton", "bn_relu_probe",
                "bn_relu_reference"],
    "se_scale": ["ACTIVATIONS", "GATES", "se_scale", "se_scale_backward", "se_scale_backward_reference",
                 "se_scale_backward_triton", "se_scale_forward_triton", "se_scale_probe", "se_scale_reference"],
    "sigmoid_gate": ["sigmoid_gate", "sigmoid_gate_backward", "sigmoid_gate_backward_reference",
                     "sigmoid_gate_backward_triton", "sigmoid_gate_forward_triton", "sigmoid_gate_halves",
                     "sigmoid_gate_halves_backward", "sigmoid_gate_probe", "sigmoid_gate_reference"],
    "silog": ["silog", "silog_from_stats", "silog_stats", "silog_stats_backward", "silog_stats_backward_reference",
              "silog_stats_backward_triton", "silog_stats_probe", "silog_stats_reference", "silog_stats_triton"],
}


def test_every_kernel_op_is_a_package_of_the_same_files_hooked_up_to_the_self_check():
    root = PACKAGE / "kernels"
    ops = sorted(p.name for p in root.iterdir() if (p / "__init__.py").is_file())
    assert ops == sorted(KERNEL_OP_NAMES)
    for op in ops:
        assert {p.name for p in (root / op).glob("*.py")} == KERNEL_OP_FILES, op
    assert sorted(module.split(".")[0] for module, _ in selfcheck.PROBES.values()) == ops


def test_every_kernel_op_package_exports_its_public_names():
    for op, names in KERNEL_OP_NAMES.items():
        package = importlib.import_module(f"fastmtl.kernels.{op}")
        assert sorted(package.__all__) == names, op
        assert [n for n in names if not hasattr(package, n)] == [], op
