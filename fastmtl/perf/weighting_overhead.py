"""The cost of a weighting method: one train step of the default model, per method and mode.

:class:`WeightingStepRunner` is the benchmark's unit (``benchmarks/bench_weighting.py`` times
it with pytest-benchmark; ``python -m fastmtl.perf.weighting_overhead`` writes the table of
``benchmarks/RESULTS.md``: step time and peak memory relative to fixed weights). The default
model (``Config()``: distill_allconnect, ResNet-34 + SE, dilation F,T,T), Adam, the default
loss on a random batch; bf16 autocast on CUDA. Peak memory: ``torch.cuda.max_memory_allocated``
on CUDA; on CPU the process's peak RSS (``ru_maxrss``) in a fresh process per row.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

import torch

from fastmtl.weighting import METHODS, NAMES
from fastmtl.weighting.training import WeightedTrainStep, method_for_run, param_groups


class WeightingStepRunner:
    """Call it for one train step of the default model under ``method`` (``fixed``: the
    trainer's own path) with per-task gradients w.r.t. ``grads`` (params | rep)."""

    def __init__(self, method: str, grads: str, device, batch: int = 2, size=(64, 128), seed: int = 0):
        from fastmtl.config import Config
        from fastmtl.data import DepthNormalizer
        from fastmtl.losses import MultiTaskLoss
        from fastmtl.models import build_model

        self.device = device = torch.device(device)
        self.amp = torch.bfloat16 if device.type == "cuda" else None
        cfg = Config(weighting=method, weighting_grads=grads).validate()
        torch.manual_seed(seed)
        self.model = build_model(cfg, {"semseg": 19, "depth": 1}).to(device).train()
        self.loss_fn = MultiTaskLoss(cfg.weight_semseg, cfg.weight_depth, cfg.depth_loss, DepthNormalizer("log", 2.5, 1.0))
        self.method = method_for_run(cfg, ["semseg", "depth"], steps_per_epoch=100)
        if self.method is not None:
            self.method.to(device)
        self.optimizer = torch.optim.Adam(param_groups(self.model, self.method), lr=1e-4)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0)
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)
        self.step = None if self.method is None else WeightedTrainStep(
            self.method, self.model, self.model, self.loss_fn, ["semseg", "depth"], grads)
        h, w = size
        gen = torch.Generator(device=device).manual_seed(seed)
        self.x = torch.randn((batch, 3, h, w), generator=gen, device=device)
        self.semseg = torch.randint(0, 19, (batch, h, w), generator=gen, device=device)
        self.depth = torch.rand((batch, 1, h, w), generator=gen, device=device) * 79 + 1

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def __call__(self) -> None:
        if self.step is not None:
            self.step(self.x, self.semseg, self.depth, self._autocast, self.optimizer, self.scaler, self.scheduler)
            return
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.model(self.x)
        loss, _ = self.loss_fn(out, self.semseg, self.depth)
        loss.backward()
        self.optimizer.step()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


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
    import resource

    runner = WeightingStepRunner(method, grads, device, batch, size)
    if runner.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runner.device)
    runner()
    runner.synchronize()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        runner()
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
