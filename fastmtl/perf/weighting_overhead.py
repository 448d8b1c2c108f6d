"""The cost of a weighting method: one train step of the default model, per method and mode.

:func:`weighting_step` is the benchmark's unit (``benchmarks/bench_weighting.py`` times it with
pytest-benchmark; ``python -m fastmtl.perf.weighting_overhead`` writes the table of
``benchmarks/weighting/results.md``: step time and peak memory relative to fixed weights): the trainer's
own step (:class:`fastmtl.perf.step_runner.StepRunner`) of the default config (distill_allconnect,
ResNet-34 + SE, dilation F,T,T, Adam, the default loss) under the method, on a random batch;
bf16 autocast on CUDA. Peak memory: ``torch.cuda.max_memory_allocated``
on CUDA; on CPU the process's peak RSS (``ru_maxrss``) in a fresh process per row.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

import torch

from fastmtl.config import Config
from fastmtl.weighting import METHODS, NAMES

from .step_runner import StepRunner


def weighting_step(method: str, grads: str, device, batch: int = 2, size=(64, 128), seed: int = 0) -> StepRunner:
    """The trainer's step of the default model under ``method`` (``fixed``: fixed weights) with
    per-task gradients w.r.t. ``grads`` (params | rep); call its ``train()`` for one step."""
    return StepRunner(Config(weighting=method, weighting_grads=grads, fused=False).validate(), device, batch, size,
                      seed=seed)


def rows() -> List[tuple]:
    """``(method, grads)`` for every method: loss methods once, gradient methods in both modes."""
    out = []
    for name in NAMES:
        out.append((name, "params"))
        if METHODS[name].kind == "gradient":
            out.append((name, "rep"))
    return out


def measure(method: str, grads: str, device: str, steps: int, size, batch: int) -> Dict[str, float]:
    """Median step seconds over ``steps`` (after 1 warm-up) and peak memory in MiB."""

    runner = weighting_step(method, grads, device, batch, size)
    if runner.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runner.device)
    runner.train()
    runner.synchronize()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        runner.train()
        runner.synchronize()
        times.append(time.perf_counter() - t0)
    if runner.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(runner.device) / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": statistics.median(times), "peak_mib": peak}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="train-step time and peak memory per weighting method vs fixed weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", default="64x128", help="HxW (default 64x128)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "GRADS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(*args.one, args.device, args.steps, size, args.batch)))
        return 0
    results = {}
    for method, grads in rows():  # a fresh process per row: its own peak memory
        cmd = [sys.executable, "-m", "fastmtl.perf.weighting_overhead", "--one", method, grads, "--device", args.device,
               "--steps", str(args.steps), "--batch", str(args.batch), "--size", args.size,
               "--threads", str(args.threads)]
        results[method, grads] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(f"{method} {grads}: {results[method, grads]}", file=sys.stderr, flush=True)
    base = results["fixed", "params"]
    print("| method | grads | step s | time vs fixed | peak MiB | memory vs fixed |")
    print("|---|---|---:|---:|---:|---:|")
    for (method, grads), r in results.items():
        print(f"| {method} | {grads if METHODS[method].kind == 'gradient' else '-'} | {r['seconds']:.3f} | "
              f"{r['seconds'] / base['seconds']:.2f}x | {r['peak_mib']:.0f} | {r['peak_mib'] / base['peak_mib']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
