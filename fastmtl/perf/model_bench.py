"""``fastmtl bench --models``: images/s and peak memory of whole models, per implementation.

Each row is one :class:`fastmtl.perf.bench.ModelRunner` (model, phase ``train`` or ``inference``,
implementation ``eager`` / ``compile`` / ``fused`` / ``fused_compile``; bf16 autocast on CUDA,
batch and input size from :data:`fastmtl.perf.bench.MODEL_SIZES`). Building it runs two warm-up
calls (compiling the ``compile`` impls; the time is reported as ``warmup_s``), then ``steps``
calls are timed one by one (synchronized, ``time.perf_counter``): ``median_ms`` per call and
``images_per_s = batch / median``. ``peak_memory_mib`` is ``torch.cuda.max_memory_allocated``
over the timed calls (reset after the warm-up; None on CPU). ``selfcheck`` lists the fused ops
that failed their self-check in this process (their rows then time the reference for those
keys). Speed is reported, never asserted.
"""
from __future__ import annotations

import datetime
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

from fastmtl.perf import bench as fb
from fastmtl.config import Config, ConfigError


def resolve_models(names: Sequence[str]) -> List[str]:
    """Model names, ``default`` meaning the config's default model; unknown names are a ConfigError."""
    from fastmtl.models import MODEL_NAMES

    out = []
    for name in names:
        name = Config().model if name == "default" else name
        if name not in MODEL_NAMES:
            raise ConfigError(f"--models: unknown model {name!r}; valid: default, {', '.join(MODEL_NAMES)}")
        out.append(name)
    return out


def time_steps(runner: "fb.ModelRunner", steps: int) -> List[float]:
    """Milliseconds of each of ``steps`` synchronized calls of ``runner``."""
    times = []
    for _ in range(steps):
        runner.synchronize()
        t0 = time.perf_counter()
        runner()
        runner.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def run_model_bench(models: Sequence[str], phases: Sequence[str], impls: Optional[Sequence[str]], device: str,
                    size: Optional[str] = None, steps: Optional[int] = None, progress: bool = False) -> Dict:
    """Time every (model, phase, impl); return the report (JSON-able, see :func:`format_model_report`).
    ``impls`` None: all four on CUDA, eager on CPU; ``steps`` None: 10 on CUDA, 3 on CPU."""
    from fastmtl.kernels import selfcheck

    dev = torch.device(device)
    size = size or ("full" if dev.type == "cuda" else "small")
    if size not in fb.MODEL_SIZES:
        raise ConfigError(f"--size must be one of {', '.join(fb.MODEL_SIZES)} for --models, got {size!r}")
    steps = (10 if dev.type == "cuda" else 3) if steps is None else steps
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    explicit = impls is not None
    impls = list(impls) if explicit else list(fb.default_impls(dev))
    rows: List[Dict] = []
    for model in resolve_models(models):
        for phase in phases:
            for impl in impls:
                batch, (h, w) = fb.MODEL_SIZES[size]
                row = {"model": model, "phase": phase, "impl": impl, "batch": batch, "input": [h, w],
                       "steps": steps, "median_ms": None, "images_per_s": None, "peak_memory_mib": None,
                       "warmup_s": None, "skipped": fb.skip_reason(impl, dev, allow_cpu_compile=explicit), "error": None}
                rows.append(row)
                if row["skipped"]:
                    continue
                if progress:
                    print(f"bench: model {model} {phase} {impl}", file=sys.stderr, flush=True)
                try:
                    t0 = time.perf_counter()
                    runner = fb.ModelRunner(model, phase, impl, dev, size)
                    row["warmup_s"] = round(time.perf_counter() - t0, 1)
                    row["amp"] = str(runner.amp).replace("torch.", "") if runner.amp is not None else "off"
                    if dev.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(dev)
                    row["median_ms"] = statistics.median(time_steps(runner, steps))
                    row["images_per_s"] = batch / (row["median_ms"] * 1e-3)
                    if dev.type == "cuda":
                        row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
                    del runner
                except Exception as e:  # one broken row must not cost the whole (device-time) run
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                torch._dynamo.reset()
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
    eager = {(r["model"], r["phase"]): r["median_ms"] for r in rows if r["impl"] == "eager"}
    for r in rows:
        r["speedup_vs_eager"] = fb.speedup(eager.get((r["model"], r["phase"])), r["median_ms"])
    return {
        "schema": "fastmtl-bench-models/1",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": fb.device_name(dev), "torch": torch.__version__, "triton": fb._triton_version(),
        "size": size, "timer": "time.perf_counter around each synchronized call, median",
        "selfcheck_fallbacks": [r.to_dict() for r in selfcheck.results() if not r.ok],
        "rows": rows,
    }


def format_model_report(report: Dict) -> str:
    lines = [f"fastmtl bench --models  {report['date']}  {report['device']}  torch {report['torch']}  "
             f"triton {report['triton']}  size {report['size']}",
             f"timing: {report['timer']}; peak memory: torch.cuda.max_memory_allocated over the timed steps",
             f"{'model':20s} {'phase':10s} {'impl':14s} {'batch':>5s} {'median ms':>10s} {'images/s':>9s} "
             f"{'x eager':>7s} {'peak MiB':>9s} {'warm-up s':>9s}"]
    for r in report["rows"]:
        if r["skipped"] or r["error"]:
            lines.append(f"{r['model']:20s} {r['phase']:10s} {r['impl']:14s} "
                         + (f"not timed: {r['skipped']}" if r["skipped"] else f"FAILED: {r['error']}"))
            continue
        lines.append(f"{r['model']:20s} {r['phase']:10s} {r['impl']:14s} {r['batch']:5d} {fb._num(r['median_ms']):>10s} "
                     f"{fb._num(r['images_per_s']):>9s} {fb._fmt(r['speedup_vs_eager'], '7.2f'):>7s} "
                     f"{fb._fmt(r['peak_memory_mib'], '9.0f'):>9s} {fb._fmt(r['warmup_s'], '9.1f'):>9s}")
    for f in report["selfcheck_fallbacks"]:
        lines.append(f"! self-check fallback: {f['op']} {f['dtype']} {f['layout']} on {f['device']}: {f['error']}")
    return "\n".join(lines)
