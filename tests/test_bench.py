"""The op benchmark (fastmtl/perf/cases.py, report.py, timing.py, op_bench.py): byte formulas, GB/s and
speed-up arithmetic, the structure of its results.

Speed is never asserted: only that times are positive and the derived numbers follow from them.
"""
import json
import math
from dataclasses import replace

import pytest
import torch

from fastmtl.kernels import use_triton
from fastmtl.kernels.bn_relu import batch_norm_relu
from fastmtl.perf import cases as op_cases
from fastmtl.perf import op_bench
from fastmtl.perf import report as op_report
from fastmtl.perf import timing as op_timing
from fastmtl.cli import main
from fastmtl.config import ConfigError

CPU = torch.device("cpu")


# --------------------------------------------------------------------------- byte and FLOP formulas
def test_se_scale_bytes_by_hand():
    e = 8 * 64 * 64 * 128  # layer1 at batch 8, 256x512 input
    wt = (2 * 64 * 4 + 64 + 4) * 4  # fc1 (4, 64), fc2 (64, 4), biases; fp32
    got = op_cases.se_scale_bytes(8, 64, 64, 128, 4, act_bytes=2, weight_bytes=4)
    assert got == {"forward": 3 * e * 2 + wt, "backward": 5 * e * 2 + 2 * wt, "full": 8 * e * 2 + 3 * wt}
    assert got["forward"] == 25_168_144
    no_res = op_cases.se_scale_bytes(8, 64, 64, 128, 4, 2, 4, residual=False)
    assert no_res["forward"] == 2 * e * 2 + wt and no_res["backward"] == 3 * e * 2 + 2 * wt


def test_sigmoid_gate_bytes_by_hand():
    e = 8 * 256 * 64 * 128
    assert op_cases.sigmoid_gate_bytes(8, 256, 64, 128, 2) == {"forward": 8 * e, "backward": 10 * e, "full": 18 * e}
    assert op_cases.sigmoid_gate_bytes(8, 256, 64, 128, 2, residual=False)["forward"] == 6 * e


def test_aspp_bytes_and_flops_by_hand():
    got = op_cases.aspp_bytes(8, 4, 256, 256, 32, 64, act_bytes=2, bias_bytes=2, affine_bytes=4)
    e_in, e_out, wt = 8 * 4 * 256 * 2048, 8 * 256 * 2048, 256 * 1024
    assert got["forward"] == (e_in + e_out + wt) * 2 + 8 * 256 * 2 + 2 * 256 * 4 == 42_473_472
    assert got["backward"] == 2 * (e_in + e_out + wt) * 2 + 8 * 256 * 2 + 256 * 4 == 84_939_776
    assert got["full"] == got["forward"] + got["backward"]
    f = op_cases.aspp_flops(8, 4, 256, 256, 32, 64)
    assert f == {"forward": 8_589_934_592, "backward": 2 * 8_589_934_592, "full": 3 * 8_589_934_592}


def test_silog_bytes_by_hand():
    e = 8 * 256 * 512
    assert op_cases.silog_bytes(8, 256, 512, pred_bytes=2, target_bytes=4) == {
        "forward": 6 * e + 96, "backward": 8 * e + 96, "full": 14 * e + 192}


def test_bn_relu_bytes_by_hand():
    e, c = 8 * 256 * 32 * 64, 256  # the 1/8 pair at batch 8, 256x512 input
    got = op_cases.bn_relu_bytes(8, 256, 32, 64, act_bytes=2, param_bytes=4)
    # forward: x in, out back; weight, bias, running mean and var read, the running pair written, mean and invstd
    # written; backward: grad and x in, dx back; weight, bias, mean and invstd read, dweight and dbias written
    assert got == {"forward": 4 * e + 8 * c * 4, "backward": 6 * e + 6 * c * 4, "full": 10 * e + 14 * c * 4}
    assert got["forward"] == 16_785_408
    untracked = op_cases.bn_relu_bytes(8, 256, 32, 64, 2, 4, running=False)  # track_running_stats=False
    assert untracked["forward"] == 4 * e + 4 * c * 4 and untracked["backward"] == got["backward"]


@pytest.mark.parametrize("op", op_cases.OPS)
def test_bytes_moved_matches_the_formulas(op):
    case = op_cases.cases(op, "full")[0]
    d = dict(case.dims)
    want = {
        "se_scale": lambda: op_cases.se_scale_bytes(d["n"], d["c"], d["h"], d["w"], d["c"] // 16, 2, 4),
        "sigmoid_gate": lambda: op_cases.sigmoid_gate_bytes(d["n"], d["c"], d["h"], d["w"], 2),
        "aspp": lambda: op_cases.aspp_bytes(d["n"], d["k"], d["cb"], d["cout"], d["h"], d["w"], 2, 2, 4),
        "silog": lambda: op_cases.silog_bytes(d["n"], d["h"], d["w"], 2, 4),
        "bn_relu": lambda: op_cases.bn_relu_bytes(d["n"], d["c"], d["h"], d["w"], 2, 4),
    }[op]()
    assert op_cases.bytes_moved(case, torch.bfloat16) == want
    fp32 = op_cases.bytes_moved(case, torch.float32)
    assert all(fp32[m] > want[m] for m in op_cases.MODES)
    assert (op_cases.flops(case) is not None) == (op == "aspp")


def test_full_cases_are_the_issue_shapes():
    se = [(c["n"], c["c"], c["h"], c["w"]) for c in op_cases.cases("se_scale", "full")]
    assert se == [(8, 64, 64, 128), (8, 128, 32, 64), (8, 256, 32, 64), (8, 512, 32, 64)]
    gate = [(c["n"], c["c"], c["h"], c["w"]) for c in op_cases.cases("sigmoid_gate", "full")]
    assert gate == [(8, 256, 64, 128), (8, 256, 128, 256)]
    (aspp,) = op_cases.cases("aspp", "full")
    assert [aspp[k] for k in ("n", "k", "cb", "cout", "h", "w")] == [8, 4, 256, 256, 32, 64]
    (silog,) = op_cases.cases("silog", "full")
    assert [silog[k] for k in ("n", "h", "w")] == [8, 256, 512]
    bn = op_cases.cases("bn_relu", "full")
    assert [(c["n"], c["c"], c["h"], c["w"]) for c in bn] == [(8, 256, 32, 64), (8, 256, 128, 256)]
    for op in op_cases.OPS:  # small sizes are strictly smaller; only BatchNorm + ReLU runs channels_last
        assert all(op_cases.set_bytes(s, torch.float32) < op_cases.set_bytes(f, torch.float32)
                   for s, f in zip(op_cases.cases(op, "small"), op_cases.cases(op, "full")))
        assert {c.layout for size in op_cases.SIZES for c in op_cases.cases(op, size)} == (
            {"channels_last"} if op == "bn_relu" else {"nchw"})


def test_bn_relu_cases_are_pairs_of_the_default_model():
    """Each bn_relu case is the input of that many FusedBatchNormReLU of the fused default model
    (checked at size small: batch 2 at 64x128)."""
    from collections import Counter

    from fastmtl.config import Config
    from fastmtl.models import build_model
    from fastmtl.nn import FusedBatchNormReLU

    model = build_model(Config(), {"semseg": 19, "depth": 1}, fused=True)
    seen = Counter()
    for m in model.modules():
        if isinstance(m, FusedBatchNormReLU):
            m.register_forward_hook(lambda mod, args, out: seen.update([tuple(args[0].shape)]))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 128))
    assert sum(seen.values()) == 41
    counts = [seen[(c["n"], c["c"], c["h"], c["w"])] for c in op_cases.cases("bn_relu", "small")]
    assert counts == [18, 2]  # the most frequent pair and the largest
    largest = max(seen, key=lambda s: s[0] * s[1] * s[2] * s[3])
    assert largest == tuple(op_cases.cases("bn_relu", "small")[1][k] for k in "nchw")


def test_make_inputs_follow_the_case_layout():
    for op in (op for op in op_cases.OPS if op != "silog"):  # silog's (N, 1, H, W): one order in both layouts
        case = op_cases.cases(op, "tiny")[0]
        for layout in op_cases.LAYOUTS:
            s = op_cases.make_inputs(replace(case, layout=layout), CPU, torch.float32, torch.Generator().manual_seed(0))
            acts = [t for t in s.leaves if t.dim() == 4 and min(t.shape) > 1]  # (channel slices of) activations
            inner = "channels_last" if layout == "channels_last" else "nchw"
            assert acts and all(("channels_last" if t.stride(1) == 1 else "nchw") == inner for t in acts), (op, layout)
    with pytest.raises(ValueError, match="layout"):
        op_cases.make_inputs(replace(case, layout="nhwc"), CPU, torch.float32, torch.Generator())


def test_cases_reject_unknown_op_and_size():
    with pytest.raises(ConfigError, match="unknown op"):
        op_cases.cases("conv", "small")
    with pytest.raises(ConfigError, match="--size"):
        op_cases.cases("silog", "huge")


# --------------------------------------------------------------------------- arithmetic
def test_gbps_tflops_and_speedup_arithmetic():
    assert op_timing.gbps(2e9, 1000.0) == pytest.approx(2.0)
    assert op_timing.gbps(1e6, 0.001) == pytest.approx(1000.0)
    assert op_timing.tflops(3e12, 500.0) == pytest.approx(6.0)
    assert op_report.speedup(3.0, 1.5) == pytest.approx(2.0)
    assert op_report.speedup(None, 1.0) is None and op_report.speedup(1.0, None) is None


def test_add_derived_rows():
    def row(impl, ms):
        return {"op": "silog", "case": "c", "mode": "forward", "impl": impl, "bytes": 4e9, "flops": 8e12, "ms": ms}

    rows = [row("eager", 8.0), row("compile", 4.0), row("fused", 2.0), row("fused_compile", None),
            dict(row("eager", 100.0), mode="backward")]
    op_report.add_derived(rows, copy_gbps=4000.0)
    eager, comp, fused, skipped, other_mode = rows
    assert fused["gbps"] == pytest.approx(2000.0)  # 4e9 bytes in 2 ms
    assert fused["copy_fraction"] == pytest.approx(0.5)
    assert fused["tflops"] == pytest.approx(4000.0)
    assert fused["speedup_vs_eager"] == pytest.approx(4.0)
    assert fused["speedup_vs_compile"] == pytest.approx(2.0)
    assert eager["speedup_vs_eager"] == pytest.approx(1.0) and comp["speedup_vs_eager"] == pytest.approx(2.0)
    assert other_mode["speedup_vs_compile"] is None  # no compile row for that mode
    assert other_mode["speedup_vs_eager"] == pytest.approx(1.0)
    assert all(skipped[k] is None for k in ("gbps", "copy_fraction", "tflops", "speedup_vs_eager", "speedup_vs_compile"))


def test_input_sets_cover_twice_the_cache():
    assert op_timing.input_sets(10 << 20, 50 << 20) == 10
    assert op_timing.input_sets(1 << 30, 50 << 20) == 2  # at least two sets
    assert op_timing.input_sets(1, 50 << 20) == 64  # bounded
    assert op_timing.input_sets(3, 10, lo=1, hi=100) == 7


def test_rel_err():
    a = torch.tensor([3.0, 4.0])
    assert op_bench.rel_err([a], [a.clone()]) == 0.0
    assert op_bench.rel_err([a + torch.tensor([0.0, 0.5])], [a]) == pytest.approx(0.1)
    assert math.isnan(op_bench.rel_err([torch.tensor([math.nan, 1.0])], [a]))


def test_skip_reasons_on_cpu():
    assert op_cases.skip_reason("eager", CPU) is None
    assert "CUDA" in op_cases.skip_reason("fused", CPU) and "interpreter" in op_cases.skip_reason("fused_compile", CPU, True)
    assert "compile" in op_cases.skip_reason("compile", CPU)
    assert op_cases.skip_reason("compile", CPU, allow_cpu_compile=True) is None
    assert op_cases.default_impls(CPU) == ("eager",)


@pytest.mark.parametrize("mode", op_cases.MODES)
@pytest.mark.parametrize("op", op_cases.OPS)
def test_op_runner_outputs_and_rotation(op, mode):
    case = op_cases.cases(op, "tiny")[0]
    runner = op_bench.OpRunner(case, mode, "eager", CPU, torch.float32, sets=3)
    leaves = len(runner.sets[0].leaves)
    assert len(runner.outputs) == (1 if mode == "forward" else 1 + leaves)
    assert runner.bytes == op_cases.bytes_moved(case, torch.float32)[mode]
    assert all(torch.isfinite(t).all() for t in runner.outputs)
    assert not runner.sets[0].args[0 if op != "aspp" else 1].eq(runner.sets[1].args[0 if op != "aspp" else 1]).all()
    seen = []
    for _ in range(4):
        seen.append(runner._next)
        runner()
    assert seen == [0, 1, 2, 0]


def test_copy_bandwidth_counts_read_and_write():
    copy = op_timing.copy_bandwidth(CPU, 1 << 16, repeats=3)
    assert copy["bytes"] == 2 * (1 << 16)
    assert copy["gbps"] == pytest.approx(op_timing.gbps(copy["bytes"], copy["ms"]))


# --------------------------------------------------------------------------- the command
def test_cli_bench_json_structure(capsys):
    assert main(["bench", "--json", "--ops", "silog", "--size", "tiny", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("schema", "date", "device", "device_type", "torch", "triton", "kernels_mode", "size", "dtype",
                "timer", "threads", "copy", "impls", "byte_formulas", "rows"):
        assert key in report, key
    assert report["device_type"] == "cpu" and report["size"] == "tiny" and report["dtype"] == "float32"
    assert "perf_counter" in report["timer"] and "interpreter" in report["timer"]
    assert set(report["byte_formulas"]) == {"silog"}
    assert report["copy"]["gbps"] == pytest.approx(op_timing.gbps(report["copy"]["bytes"], report["copy"]["ms"]))
    rows = report["rows"]
    assert [(r["mode"], r["impl"]) for r in rows] == [(m, i) for m in op_cases.MODES for i in op_cases.IMPLS]
    (case,) = op_cases.cases("silog", "tiny")
    for r in rows:
        assert r["op"] == "silog" and r["case"] == case.name and r["dims"] == dict(case.dims)
        assert r["bytes"] == op_cases.bytes_moved(case, torch.float32)[r["mode"]]
        if r["impl"] == "eager":
            assert r["skipped"] is None and r["ms"] > 0
            assert r["gbps"] == pytest.approx(op_timing.gbps(r["bytes"], r["ms"]))
            assert r["copy_fraction"] == pytest.approx(r["gbps"] / report["copy"]["gbps"])
            assert r["speedup_vs_eager"] == pytest.approx(1.0) and r["speedup_vs_compile"] is None
        else:
            assert r["ms"] is None and r["gbps"] is None and r["skipped"]


def test_cli_bench_table_names_what_was_not_timed(capsys):
    assert main(["bench", "--ops", "silog", "--modes", "forward", "--size", "tiny", "--device", "cpu",
                 "--impls", "eager,fused"]) == 0
    out = capsys.readouterr().out
    assert "copy bandwidth" in out and "== silog" in out and "bytes: fwd" in out
    assert "not timed: fused: Triton kernels run on CUDA only" in out
    assert "not timed: compile" not in out  # only what --impls asked for is listed


@pytest.mark.parametrize("argv, message", [
    (["--ops", "conv"], "--ops: unknown value 'conv'"),
    (["--modes", "sideways"], "--modes: unknown value"),
    (["--impls", "cuda_graph"], "--impls: unknown value"),
    (["--size", "huge"], "--size must be one of tiny, small, full"),
])
def test_cli_bench_rejects_bad_values(capsys, argv, message):
    assert main(["bench", "--device", "cpu", *argv]) == 2
    assert message in capsys.readouterr().err


def test_rows_above_the_copy_bandwidth_are_flagged(capsys):
    assert main(["bench", "--json", "--ops", "silog", "--modes", "forward", "--impls", "eager", "--size", "tiny",
                 "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = [r for r in report["rows"] if r["ms"] is not None]
    row["copy_fraction"] = 0.5
    assert "WARNING" not in op_report.format_report(report)
    row["copy_fraction"] = 1.5
    assert "WARNING: 1 rows above 100 % of the copy bandwidth" in op_report.format_report(report)


def test_a_failing_row_is_reported_and_the_run_goes_on(monkeypatch):
    real = op_bench.OpRunner

    def flaky(case, mode, impl, *args, **kwargs):
        if mode == "backward":
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")
        return real(case, mode, impl, *args, **kwargs)

    monkeypatch.setattr(op_bench, "OpRunner", flaky)
    report = op_bench.run_bench(op_bench.BenchOptions(ops=["silog"], size="tiny", device="cpu"))
    eager = {r["mode"]: r for r in report["rows"] if r["impl"] == "eager"}
    assert eager["backward"]["ms"] is None and eager["backward"]["error"] == (
        "RuntimeError: CUDA error: an illegal memory access was encountered")
    assert eager["forward"]["ms"] > 0 and eager["full"]["ms"] > 0 and eager["full"]["error"] is None
    assert "FAILED: tiny 2x8x16 backward eager: RuntimeError" in op_report.format_report(report)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", op_cases.MODES)
def test_bn_relu_fused_rows_agree_with_the_eager_row(triton_mode, mode, dtype):
    """The ``fused`` bn_relu runner (Triton kernels, through the interpreter) gives the ``eager``
    runner's output and gradients (x, weight, bias) on the same inputs, in the same layout."""
    case = op_cases.cases("bn_relu", "tiny")[0]
    eager, fused = (op_bench.OpRunner(case, mode, impl, CPU, dtype, sets=1) for impl in ("eager", "fused"))
    assert len(fused.outputs) == len(eager.outputs) == (1 if mode == "forward" else 4)
    assert fused.outputs[0].is_contiguous(memory_format=torch.channels_last)
    assert op_bench.rel_err(fused.outputs, eager.outputs) <= op_bench.REL_ERR_TOL[dtype]
    for got, want in zip(fused.outputs, eager.outputs):
        assert got.dtype == want.dtype and got.shape == want.shape
    assert use_triton(fused.sets[0].args[0])  # the Triton kernels ran, not the op's reference
    assert op_bench.fused_fn("bn_relu") is batch_norm_relu


def test_compiled_backward_pass_replays_its_retained_graph():
    """The ``backward`` pass re-runs one retained graph; Inductor's compiled BatchNorm + ReLU backward
    donates its saved buffers unless told not to, which would refuse the second run."""
    case = op_cases.cases("bn_relu", "tiny")[0]
    eager = op_bench.OpRunner(case, "backward", "eager", CPU, torch.float32, sets=1)
    compiled = op_bench.OpRunner(case, "backward", "compile", CPU, torch.float32, sets=1)
    again = [compiled() for _ in range(2)][-1]
    assert op_bench.rel_err(again, eager.outputs[1:]) <= op_bench.REL_ERR_TOL[torch.float32]
    assert op_bench.rel_err(compiled.outputs, eager.outputs) <= op_bench.REL_ERR_TOL[torch.float32]


# --------------------------------------------------------------------------- the eager rows' unfused paths
def test_eager_rows_time_the_models_modules_under_autocast_not_an_fp32_upcast():
    """The ``eager`` SE and gate paths equal the reference modules (SE + the block tail, SelfAttention
    after its convs) run under bf16 autocast, bit for bit, and stay in bf16 throughout."""
    from fastmtl import layers
    from fastmtl.perf import unfused

    gen = torch.Generator().manual_seed(3)
    x, identity = (torch.randn(2, 32, 5, 7, generator=gen).to(torch.bfloat16) for _ in range(2))
    se = layers.SqueezeExcitation(32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch.relu(se(x) + identity)
    got = op_bench.reference_fn("se_scale")(x, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias, identity)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    f, a, r = (torch.randn(2, 9, 4, 6, generator=gen).to(torch.bfloat16) for _ in range(3))
    got = op_bench.reference_fn("sigmoid_gate")(f, a, r)
    assert got.dtype == torch.bfloat16 and torch.equal(got, r + f * torch.sigmoid(a))
    with pytest.raises(ValueError, match="relu / sigmoid"):
        unfused.se_block_tail(x, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias, act="silu")


def test_bn_relu_eager_row_is_the_models_pair_under_autocast():
    """The ``eager`` bn_relu path is ``nn.BatchNorm2d`` (training) + ``nn.ReLU(inplace=True)`` on a bf16
    conv output under autocast, bit for bit: bf16 out in the input's layout, fp32 running statistics
    updated the same way, gradients the same."""
    from torch import nn

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 12, 5, 7, generator=gen).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    bn = nn.BatchNorm2d(12)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    xa, xb = (x.clone().requires_grad_() for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = nn.ReLU(inplace=True)(bn(xa))
    got = op_bench.reference_fn("bn_relu")(xb, bn.weight, bn.bias, rm, rv, bn.momentum, bn.eps)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, want)
    assert torch.equal(rm, bn.running_mean) and torch.equal(rv, bn.running_var)
    dy = torch.randn(x.shape, generator=gen).to(torch.bfloat16)
    assert torch.equal(torch.autograd.grad(got, xb, dy)[0], torch.autograd.grad(want, xa, dy)[0])
