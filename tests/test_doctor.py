"""``fastmtl doctor``: its report (text and JSON), the self-check of every op on the CPU
through the Triton interpreter, a forced fallback, skipped checks and the exit code."""
import json

import pytest
import torch

from fastmtl import doctor
from fastmtl.cli import main
from fastmtl.kernels import selfcheck, sigmoid_gate


@pytest.fixture(autouse=True)
def _fresh_verdicts():
    selfcheck.reset()
    yield
    selfcheck.reset()


def _doctor_json(capsys, *flags):
    rc = main(["doctor", "--json", *flags])
    return rc, json.loads(capsys.readouterr().out)


def test_json_report_runs_every_check_under_the_interpreter(triton_mode, capsys):
    rc, report = _doctor_json(capsys, "--gate")
    assert rc == 0 and report["ok"] and report["schema"] == "fastmtl-doctor/1"
    assert report["versions"]["torch"] == torch.__version__
    assert report["kernels"]["FASTMTL_KERNELS"] == "triton" and report["kernels"]["TRITON_INTERPRET"] is True
    assert report["device"]["cuda"] is False and report["device"]["name"] == "no CUDA"
    ops = report["ops"]
    assert ops["device"] == "cpu" and ops["interpreted"] and ops["fallback_ops"] == []
    keys = {(c["op"], c["dtype"], c["layout"]) for c in ops["checks"]}
    assert keys == {(op, dt, lay) for op in selfcheck.OPS for dt in ("bfloat16", "float32") for lay in selfcheck.LAYOUTS}
    assert all(c["status"] == "ok" and c["error"] is None for c in ops["checks"])
    assert len(selfcheck.results()) == 4 * len(selfcheck.OPS)  # the checks really ran (and are this process's verdicts now)
    gate = report["gate"]  # no GPU: the compile gate for sm_90, every specialisation compiled
    assert gate["ok"] and gate["arch"] == "sm_90" and gate["errors"] == 0 and gate["spilling"] == 0
    assert gate["specialisations"] > 20


def test_a_failing_compile_gate_exits_1(triton_mode, monkeypatch, capsys):
    from fastmtl.perf.aot import gate

    real = gate.run_gate

    def one_error(*args, **kwargs):
        report = real(*args, **kwargs)
        report["rows"][0].update(ok=False, error="forced compiler error")
        return dict(report, ok=False, errors=1)

    monkeypatch.setattr(doctor, "run_gate", one_error)
    rc, report = _doctor_json(capsys, "--gate")
    assert rc == 1 and not report["ok"] and report["gate"]["ok"] is False and report["gate"]["errors"] == 1
    assert report["ops"]["ok"]


def test_a_failing_kernel_is_reported_and_exits_1(triton_mode, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("forced launcher failure")

    monkeypatch.setattr(sigmoid_gate.launch, "sigmoid_gate_backward_triton", broken)  # where the op and its probe look it up
    rc, report = _doctor_json(capsys)
    assert rc == 1 and not report["ok"] and report["ops"]["fallback_ops"] == ["sigmoid_gate"]
    for c in report["ops"]["checks"]:
        if c["op"] == "sigmoid_gate":
            assert c["status"] == "fallback" and "forced launcher failure" in c["error"]
        else:
            assert c["status"] == "ok"
    selfcheck.reset()
    assert main(["doctor", "--gate"]) == 1
    text = capsys.readouterr().out
    # the gate captures the launches of the same broken launcher: a finding too
    assert "FALLBACK: sigmoid_gate" in text and "verdict: NOT OK (ops, gate)" in text


def test_the_gate_runs_only_when_asked(monkeypatch, capsys):
    def no_gate(*args, **kwargs):
        raise AssertionError("the gate ran without --gate")

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(doctor, "run_gate", no_gate)
    rc, report = _doctor_json(capsys)
    assert rc == 0 and report["gate"]["ok"] is None and "fastmtl doctor --gate" in report["gate"]["skipped"]
    assert main(["doctor"]) == 0
    assert "minutes" in capsys.readouterr().out


def test_without_cuda_or_interpreter_the_checks_are_skipped(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, report = _doctor_json(capsys)
    assert rc == 0 and report["ops"]["device"] is None
    assert all(c["status"] == "skipped" and "no CUDA" in c["error"] for c in report["ops"]["checks"])
    assert selfcheck.results() == []
    assert main(["doctor"]) == 0
    assert "self-check skipped: no CUDA" in capsys.readouterr().out


def test_invalid_kernel_mode_is_a_finding(monkeypatch, capsys):
    monkeypatch.setenv("FASTMTL_KERNELS", "fast")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    rc, report = _doctor_json(capsys)
    assert rc == 1 and report["kernels"]["ok"] is False and "FASTMTL_KERNELS must be one of" in report["kernels"]["error"]


def test_one_more_section_needs_only_its_function(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    sections = doctor.SECTIONS + [("extra", lambda: {"ok": False, "configs": 3, "errors": ["x"]})]
    monkeypatch.setattr(doctor, "SECTIONS", sections)
    rc, report = _doctor_json(capsys)
    assert rc == 1 and report["extra"]["configs"] == 3
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "extra     ok=False  configs=3" in out and "NOT OK (extra)" in out
