"""Op benchmarks: every op x shape x pass (forward, backward, full) x implementation.

Implementations (see :mod:`fastmtl.perf.op_bench`): ``eager`` (the unfused path under autocast), ``compile``
(``torch.compile`` of the reference), ``fused`` (``torch.ops.fastmtl.*``, Triton on CUDA) and
``fused_compile``. The shapes are :func:`fastmtl.perf.cases.cases` at ``--bench-size``: on ``full``,
SE at every ResNet-34 stage for batch 8 at 256x512 (dilation F,T,T), the gate at 256 channels
on 1/4 and 1/2 resolution, the ASPP projection 512->256 at output stride 8, SI-log at 8x256x512,
BatchNorm + ReLU (training) at 256 channels on 1/8 and 1/2 resolution, channels_last.

Each benchmark rotates several input sets (together at least twice the L2 / last-level cache)
and synchronizes CUDA inside the timed call. ``extra_info`` records the bytes the pass must
move and, when timed, the achieved GB/s. The precise CUDA-event numbers with speed-ups and the
fraction of the copy bandwidth come from ``fastmtl bench``; these are for pytest-benchmark's
comparison and history tooling (``--benchmark-compare``, ``--benchmark-json``).

The parameters (``case`` x ``mode`` x ``impl`` for ``test_<op>``) come from
``pytest_generate_tests`` in ``benchmarks/conftest.py``, which knows the session's device and size.
"""
from __future__ import annotations

import pytest

from fastmtl.perf import cases as op_cases
from fastmtl.perf import op_bench
from fastmtl.perf import timing as op_timing


def run_op(benchmark, case, mode, impl, device, allow_cpu_compile):
    reason = op_cases.skip_reason(impl, device, allow_cpu_compile)
    if reason is not None:
        pytest.skip(reason)
    dtype = op_bench.resolve_dtype("auto", device)
    # run once under --benchmark-disable: one input set is enough
    runner = op_bench.OpRunner(case, mode, impl, device, dtype, sets=1 if benchmark.disabled else None)
    benchmark.group = f"{case.op} {case.name}"
    benchmark.extra_info.update(op=case.op, case=case.name, mode=mode, impl=impl, dtype=str(dtype),
                                bytes=runner.bytes, flops=runner.flops, input_sets=len(runner.sets))

    def one_pass():
        runner()
        runner.synchronize()

    benchmark(one_pass)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        median_ms = stats.stats.median * 1e3
        benchmark.extra_info["median_ms"] = median_ms
        benchmark.extra_info["gbps"] = op_timing.gbps(runner.bytes, median_ms)
        if runner.flops:
            benchmark.extra_info["tflops"] = op_timing.tflops(runner.flops, median_ms)


def test_se_scale(benchmark, case, mode, impl, device, allow_cpu_compile):
    run_op(benchmark, case, mode, impl, device, allow_cpu_compile)


def test_sigmoid_gate(benchmark, case, mode, impl, device, allow_cpu_compile):
    run_op(benchmark, case, mode, impl, device, allow_cpu_compile)


def test_aspp(benchmark, case, mode, impl, device, allow_cpu_compile):
    run_op(benchmark, case, mode, impl, device, allow_cpu_compile)


def test_silog(benchmark, case, mode, impl, device, allow_cpu_compile):
    run_op(benchmark, case, mode, impl, device, allow_cpu_compile)


def test_bn_relu(benchmark, case, mode, impl, device, allow_cpu_compile):
    run_op(benchmark, case, mode, impl, device, allow_cpu_compile)
