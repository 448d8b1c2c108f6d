"""The step MODEL (fastmtl.perf.step_model, ``fastmtl traffic --step``) on a tiny step: the trace of
THE train step, its host syncs and its bytes / launches against benchmarks/step_model/budget.json."""
import json
from pathlib import Path

import pytest
import torch

from fastmtl.cli import main
from fastmtl.perf.step_model import SCENARIOS, step_model
from fastmtl.perf.step_model_groups import GROUPS
from fastmtl.perf.step_model_trace import trace_step

BUDGET = json.loads((Path(__file__).parents[1] / "benchmarks" / "step_model" / "budget.json").read_text())


@pytest.fixture(scope="module")
def report():
    return step_model(BUDGET["model"], "h200", BUDGET["batch"], tuple(BUDGET["size"]), channels_last=True)


def test_report_is_labelled_a_model_with_every_scenario(report):
    assert "MODEL" in report["kind"]
    assert tuple(report["scenarios"]) == SCENARIOS
    assert all(s["ms"] > 0 and s["launches"] > 0 for s in report["scenarios"].values())
    assert report["scenarios"]["fused_compile_graphs"]["host_launches"] == 1
    graphs, compiled = report["scenarios"]["compile_graphs"], report["scenarios"]["compile"]
    assert graphs["host_launches"] == 1 and graphs["bytes"] == compiled["bytes"] and graphs["ms"] < compiled["ms"]
    floor = report["bounds"]["conv_floor_ms"]
    assert 0 < floor < min(s["ms"] for s in report["scenarios"].values())
    assert report["bounds"]["max_x_eager"] == pytest.approx(report["scenarios"]["eager"]["ms"] / floor, rel=1e-2)
    best, free = report["scenarios"]["fused_compile_graphs"], report["bounds"]["forward_free_ms"]
    assert floor < free < best["ms"]  # the forward's non-conv kernels cost something; the backward's stay
    assert 0 < report["bounds"]["forward_free_bytes_outside_convs"] < best["bytes_outside_convs"]
    assert report["bounds"]["forward_free_x_eager"] == pytest.approx(report["scenarios"]["eager"]["ms"] / free, rel=1e-2)
    assert report["scenarios"]["compile"]["launches"] < report["scenarios"]["eager"]["launches"]
    groups = {g["group"] for g in report["groups"]}
    assert {"backbone convs", "ASPP", "decoder convs", "attention", "norm", "casts", "optimizer", "losses"} <= groups
    assert any(g["group"].startswith("fused ") for g in report["groups_fused"])
    assert all(g["group"] in GROUPS or g["group"].startswith("fused ") for g in report["groups_fused"])


def test_host_syncs_within_budget(report):
    assert report["host_syncs"] == BUDGET["host_syncs"]
    assert report["host_syncs_fused"] == BUDGET["host_syncs"]


@pytest.mark.parametrize("scenario", sorted(BUDGET["scenarios"]))
def test_bytes_and_launches_within_budget(report, scenario):
    got, budget = report["scenarios"][scenario], BUDGET["scenarios"][scenario]
    for key in ("bytes", "launches"):
        assert got[key] <= budget[key] * (1 + BUDGET["tolerance"]), (
            f"{scenario} {key}: {got[key]} > budget {budget[key]} (benchmarks/step_model/budget.json)")


def test_trace_has_every_phase_and_conv_flops():
    is_available = torch.cuda.is_available
    trace = trace_step(batch=2, size=(32, 64))
    assert torch.cuda.is_available is is_available  # the fake device's patches were undone
    convs = [o for o in trace.ops if o.name == "convolution"]
    assert convs and all(o.flops > 0 for o in convs)
    assert {o.phase for o in trace.ops} == {"forward", "loss", "backward", "optimizer"}


def test_channels_last_survives_the_convolutions_and_nchw_pays_the_transposes():
    """The fake device's convolutions follow CUDA's memory-format rule (channels_last in, channels_last
    out), so a channels_last step has no transposes in its forward convolutions; an NCHW bf16 step
    transposes those of its input, output and weight that are not trivially both (the model's
    layout assumption; the SE convolutions on pooled (N, C, 1, 1) inputs need none)."""
    cl, nchw = (trace_step(batch=2, size=(32, 64), channels_last=c) for c in (True, False))
    cl_convs, nchw_convs = ([o for o in t.ops if o.name == "convolution"] for t in (cl, nchw))
    assert cl_convs and all(o.transposes == 0 for o in cl_convs)
    spatial = [o for o in nchw_convs if o.transposes]
    assert len(spatial) >= 0.6 * len(nchw_convs) and all(o.transposes <= 3 and o.transpose_bytes > 0 for o in spatial)
    reports = [step_model(batch=2, size=(32, 64), channels_last=c) for c in (True, False)]
    groups = [{g["group"]: g for g in r["groups"]} for r in reports]
    assert groups[1]["layout transposes"]["bytes"] > 10 * groups[0].get("layout transposes", {"bytes": 1})["bytes"]
    assert reports[1]["scenarios"]["eager"]["ms"] > reports[0]["scenarios"]["eager"]["ms"]


def test_cli_json(capsys):
    assert main(["traffic", "--step", "default", "--batch", "2", "--size", "32x64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"scenarios", "host_syncs", "groups"} <= set(out) and "MODEL" in out["kind"]


@pytest.mark.parametrize("argv, flag", [(["--size", "32by64"], "--size"), (["--batch", "1"], "--batch"),
                                        (["--markdown"], "--markdown"), (["--step", "nosuch"], "--step")])
def test_cli_bad_input_names_the_flag(capsys, argv, flag):
    assert main(["traffic", "--step", "default", *argv]) != 0
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("group", sorted(BUDGET["groups"]))
def test_eager_group_bytes_and_launches_within_budget(report, group):
    got = {g["group"]: g for g in report["groups"]}[group]
    for key in ("bytes", "launches"):
        assert got[key] <= BUDGET["groups"][group][key] * (1 + BUDGET["tolerance"]), (
            f"eager {group} {key}: {got[key]} > budget {BUDGET['groups'][group][key]} (benchmarks/step_model/budget.json)")


def test_fused_bn_relu_is_two_launches_each_way_and_plain_batch_norm_under_compile():
    """Eager: fastmtl::bn_relu reads x twice and writes once, its backward reads grad and x twice
    and writes dx once. The compile scenarios' trace sees FusedBatchNormReLU's compile path."""
    is_compiling = torch.compiler.is_compiling
    fused = trace_step(batch=2, size=(32, 64), fused=True)
    compiled = trace_step(batch=2, size=(32, 64), fused=True, compiling=True)
    assert torch.compiler.is_compiling is is_compiling
    for name, passes in (("fastmtl::bn_relu", 3), ("fastmtl::bn_relu_backward", 5)):
        ops = [o for o in fused.ops if o.name == name]
        assert ops and all(o.launches == 2 for o in ops)
        biggest = max(ops, key=lambda o: o.bytes)
        assert passes * max(biggest.read_bytes) <= biggest.bytes < (passes + 0.1) * max(biggest.read_bytes)
    assert not any("bn_relu" in o.name for o in compiled.ops)
    norms = [sum(o.name == "native_batch_norm" for o in t.ops) for t in (fused, compiled)]
    assert norms[1] == norms[0] + sum(o.name == "fastmtl::bn_relu" for o in fused.ops)


def test_compile_path_covers_the_encoder_and_heads_called_apart():
    """``--weighting-grads rep`` runs the encoder and the heads apart (not the model's forward): the
    compile trace still sees the compile path in both."""
    fused = trace_step(batch=2, size=(32, 64), fused=True, weighting="pcgrad", grad_mode="rep")
    compiled = trace_step(batch=2, size=(32, 64), fused=True, weighting="pcgrad", grad_mode="rep", compiling=True)
    pairs = sum(o.name == "fastmtl::bn_relu" for o in fused.ops)
    norms = [sum(o.name == "native_batch_norm" for o in t.ops) for t in (fused, compiled)]
    assert pairs > 0 and norms[1] == norms[0] + pairs
    assert not any("bn_relu" in o.name for o in compiled.ops)


def test_forward_free_bound_drops_exactly_the_forward_kernels_outside_the_convolutions():
    """On a hand-made step: a forward conv, a forward norm, a backward conv and norm, an optimizer op."""
    from fastmtl.perf.step_model import GPUS, Kernel, Scenario, _forward_free
    from fastmtl.perf.step_model_trace import OpRecord, StepTrace

    phases = ["forward", "forward", "backward", "backward", "optimizer"]
    trace = StepTrace(ops=[OpRecord("op", "g", p, 0, 0, 1) for p in phases])
    gpu = GPUS["h200"]
    kernels = [Kernel("backbone convs", 10 ** 12, 10 ** 9, 1, 0), Kernel("norm", 0, 4 * 10 ** 9, 1, 1),
               Kernel("decoder convs", 2 * 10 ** 12, 10 ** 9, 1, 2), Kernel("norm", 0, 3 * 10 ** 9, 1, 3),
               Kernel("optimizer", 0, 10 ** 9, 1, 4)]
    ms, outside = _forward_free(Scenario(trace, kernels, True), gpu)
    expected_s = 1e12 / gpu.flops + 2e12 / gpu.flops + 4e9 / gpu.bandwidth + gpu.launch_s
    assert ms == pytest.approx(expected_s * 1e3)
    assert outside == 4 * 10 ** 9  # the backward norm and the optimizer; the forward norm is free
