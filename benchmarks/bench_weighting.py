"""Weighting benchmarks: one train step of the default model per method and gradient mode.

``fastmtl.perf.weighting_overhead.weighting_step`` (the trainer's step of the default config, random batch; sizes
from ``--bench-size`` as for the model benchmarks: small = 2 at 64x128 (CPU default), full =
8 at 256x512 (CUDA default, bf16)). The benchmarks/weighting/results.md table (time and peak memory
relative to fixed weights, one process per row) comes from ``python -m fastmtl.perf.weighting_overhead``.
"""
from __future__ import annotations

import pytest

from fastmtl.perf.model_bench import MODEL_SIZES
from fastmtl.perf.weighting_overhead import rows, weighting_step

ROUNDS = {"cuda": 10, "cpu": 3}


@pytest.mark.parametrize("method,grads", rows(), ids=[f"{m}-{g}" for m, g in rows()])
def test_weighting_step(benchmark, method, grads, device, size):
    batch, size = MODEL_SIZES[size]
    runner = weighting_step(method, grads, device, batch, size)
    benchmark.group = "weighting train step"
    benchmark.extra_info.update(method=method, grads=grads, batch=batch, size=list(size))

    def one_step():
        runner.train()
        runner.synchronize()

    benchmark.pedantic(one_step, rounds=ROUNDS.get(device.type, 3), warmup_rounds=1, iterations=1)
