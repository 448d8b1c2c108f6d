"""Model-level benchmarks: inference and train-step images/s per model and implementation.

``fastmtl.models.build_model(Config(model=...), {"semseg": 19, "depth": 1}, fused=...)`` for
every model of the suite, with the config's defaults (ResNet-34 + SE, dilation F,T,T, ASPP):

* ``eager``: the reference modules; ``compile``: ``torch.compile`` of model and loss;
* ``fused``: the fused modules of :mod:`fastmtl.nn` (Triton on CUDA); ``fused_compile``: both.

``train`` is one Adam step on the default multi-task loss, ``inference`` one eval-mode batch
under ``no_grad``; bf16 autocast on CUDA (batch 8 at 256x512 on ``full``), fp32 on CPU (batch 2
at 64x128 on ``small``). ``extra_info["images_per_s"]`` is batch / median seconds. See
:class:`fastmtl.perf.model_bench.ModelRunner`. Parameters come from ``benchmarks/conftest.py``.
"""
from __future__ import annotations

import pytest

from fastmtl.perf import cases as op_cases
from fastmtl.perf import model_bench

ROUNDS = {"cuda": 10, "cpu": 3}


def test_model(benchmark, model, phase, impl, device, size, allow_cpu_compile):
    reason = op_cases.skip_reason(impl, device, allow_cpu_compile)
    if reason is not None:
        pytest.skip(reason)
    warmup = 3 if impl in ("compile", "fused_compile") else 1
    runner = model_bench.ModelRunner(model, phase, impl, device, size, warmup=0 if benchmark.disabled else warmup)
    benchmark.group = f"model {phase}"
    benchmark.extra_info.update(model=model, phase=phase, impl=impl, batch=runner.batch,
                                amp=str(runner.amp) if runner.amp is not None else "off")

    def one_step():
        runner()
        runner.synchronize()

    benchmark.pedantic(one_step, rounds=ROUNDS.get(device.type, 3), warmup_rounds=1, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["images_per_s"] = runner.batch / stats.stats.median
