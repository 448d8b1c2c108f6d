"""benchmarks/gpu_check.sh: its --dry-run (what CI can prove without a GPU: every command exists
and parses its flags), a failing command, the time budget and bad arguments."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _run(tmp_path, *args, python=sys.executable, timeout=240):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["GPU_CHECK_PYTHON"] = str(python)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(out), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, out


def _steps(out):
    return {s["step"]: s for s in json.loads((out / "results.json").read_text())["step_table"]}


def test_dry_run_proves_every_step(tmp_path):
    proc, out = _run(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = subprocess.run(["bash", str(SCRIPT), "--list"], capture_output=True, text=True).stdout.split()
    steps = _steps(out)
    assert list(steps) == names == ["install", "env", "doctor", "train_step", "kernel_table", "bench_ops",
                                    "pytest_core", "pytest_compile", "gate"]  # ordered by what decides
    for name, s in steps.items():
        assert s["status"] == "ok", s
        assert s["note"].startswith("dry-run")
    assert "tests collected" in steps["pytest_core"]["note"] and "deselected" in steps["pytest_compile"]["note"]
    summary = (out / "summary.md").read_text()
    assert "# fastmtl GPU check (dry run)" in summary and "| train_step | ok |" in summary
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "pytest_compile.xml", "pytest_core.xml",
                                                      "results.json", "summary.md"]


def test_bench_ops_step_times_every_op_of_the_case_table(capsys):
    """The bench_ops step names no --ops, so it times every op of fastmtl.perf.cases.OPS (bn_relu
    included), which is what fastmtl bench does without --ops."""
    from fastmtl.cli import main
    from fastmtl.perf import cases as op_cases

    text = SCRIPT.read_text()
    body = text[text.index("step_bench_ops() {"):]
    body = body[:body.index("\n}\n")]
    assert "fastmtl bench --size full" in body and "--ops" not in body
    assert main(["bench", "--size", "tiny", "--modes", "forward", "--impls", "eager", "--device", "cpu", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert list(dict.fromkeys(r["op"] for r in rows)) == list(op_cases.OPS) and "bn_relu" in op_cases.OPS
    assert all(r["ms"] > 0 for r in rows)


def test_a_flag_the_cli_does_not_know_fails_the_dry_run(tmp_path):
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = fastmtl ]; then exec "{sys.executable}" "$@" --no-such-flag; fi\n'
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    proc, out = _run(tmp_path, "--dry-run", "--only", "doctor,train_step,kernel_table", python=wrapper)
    assert proc.returncode == 1
    steps = _steps(out)
    assert set(steps) == {"install", "env", "doctor", "train_step", "kernel_table"}  # --only keeps install and env
    assert steps["install"]["status"] == steps["env"]["status"] == "ok"
    for s in (steps["doctor"], steps["train_step"], steps["kernel_table"]):
        assert s["status"] == "failed" and "unrecognized arguments: --no-such-flag" in s["note"], s


def test_a_missing_interpreter_is_a_clear_error(tmp_path):
    proc, _ = _run(tmp_path, "--dry-run", python=tmp_path / "no-such-python")
    assert proc.returncode == 2 and "python interpreter" in proc.stderr and "not found" in proc.stderr


def test_the_budget_is_enforced(tmp_path):
    proc, out = _run(tmp_path, "--budget", "0", timeout=60)
    assert proc.returncode == 1
    steps = _steps(out)
    assert steps and all(s["status"] == "budget" and "not run: expected" in s["note"] for s in steps.values())


def test_a_step_expected_to_outlast_the_budget_is_not_started(tmp_path):
    # 74 s budget, 15 s reserve: env (expected 30 s) starts; doctor (expected 60 s) then finds < 60 s left
    proc, out = _run(tmp_path, "--budget", "74", "--only", "env,doctor", "--skip", "install", timeout=60)
    steps = _steps(out)
    assert proc.returncode == 1 and list(steps) == ["env", "doctor"]
    assert steps["env"]["status"] == "ok"
    assert steps["doctor"]["status"] == "budget" and "not run: expected 60s" in steps["doctor"]["note"]


@pytest.mark.parametrize("args, message", [(["--only", "nope"], "unknown step 'nope'"),
                                           (["--budget", "5m"], "--budget must be whole seconds"),
                                           (["--frobnicate"], "unknown argument '--frobnicate'")])
def test_bad_arguments(tmp_path, args, message):
    proc, _ = _run(tmp_path, *args, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr


def test_parse_only_runs_nothing(monkeypatch, capsys):
    from fastmtl.cli import main

    monkeypatch.setenv("FASTMTL_PARSE_ONLY", "1")
    assert main(["doctor", "--json"]) == 0 and capsys.readouterr().out == ""
    with pytest.raises(SystemExit) as e:
        main(["bench", "--models", "default", "--no-such-flag"])
    assert e.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_report_summarises_steps_tests_doctor_and_tables(tmp_path, triton_mode, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_check_report
    finally:
        sys.path.pop(0)
    from fastmtl.cli import main
    from fastmtl.kernels import selfcheck

    stage, out = tmp_path / "stage", tmp_path / "out"
    stage.mkdir()
    selfcheck.reset()
    main(["doctor", "--json"])
    (stage / "doctor.json").write_text(capsys.readouterr().out)
    main(["bench", "--size", "tiny", "--ops", "silog", "--modes", "forward", "--impls", "eager", "--device", "cpu", "--json"])
    (stage / "bench_ops.json").write_text(capsys.readouterr().out)
    (stage / "kernel_table.json").write_text("{not json")
    (stage / "train_step.json").write_text("")  # killed by its timeout before printing
    row = {"model": "joint", "encoder": "resnet18", "phase": "train", "layout": "channels_last", "impl": "eager",
           "batch": 8, "input": [256, 512], "steps": 10, "median_ms": 20.0, "images_per_s": 400.0,
           "peak_memory_mib": 1234.0, "warmup_s": 3.0, "skipped": None, "error": None, "speedup_vs_eager": 1.0}
    (stage / "train_step.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(dict(row, impl="compile"))[:40])
    (stage / "steps.tsv").write_text("doctor\tok\t0\t3\t120\t\nbench_ops\tfailed\t1\t9\t120\tboom\n")
    (stage / "pytest_core.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_kernels_cuda" name="test_a"><failure message="assert 2 == 1">x</failure></testcase>'
        '<testcase classname="tests.test_kernels_cuda" name="test_b"/></testsuite></testsuites>')
    results = gpu_check_report.build(stage, out, tables=True, dry_run=False, budget=470, elapsed=12)
    assert results["steps"]["doctor"]["ok"] and list(results["steps"]["kernel_table"]) == ["unparsable"]
    assert results["steps"]["train_step"]["rows"] == [row]  # the cut-off last line is dropped
    assert "1 rows from train_step.jsonl" in results["steps"]["train_step"]["partial"]
    assert results["tests"]["pytest_core"]["failures"] == 1
    summary = (out / "summary.md").read_text()
    assert "| bench_ops | failed | 1 | 9 | 120 | boom |" in summary
    assert "- pytest_core: 3 tests, 1 failures, 0 errors, 1 skipped" in summary
    assert "`tests.test_kernels_cuda::test_a`: assert 2 == 1" in summary
    assert "self-check on cpu: all ok" in summary
    assert "### doctor" in summary and "### bench_ops" in summary and "== silog" in summary
    assert "### train_step" in summary and "joint@resnet18" in summary and "channels_last eager" in summary
    assert json.loads((out / "results.json").read_text())["elapsed_s"] == 12
    selfcheck.reset()
