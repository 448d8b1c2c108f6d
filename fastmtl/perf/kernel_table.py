"""``fastmtl bench --models M --kernel-table``: where one warmed-up train step spends its time.

For each (model, layout, impl) one :class:`~fastmtl.perf.model_bench.ModelRunner` train step (after
its warm-up calls) runs under ``torch.profiler``; the table lists the top kernels (CUDA: the device
events, by device time) or ops (CPU: by self CPU time) with their calls, total ms and % of the
step (the sum of that time over every event of the step). A profile, not a timing: the profiler
adds its own overhead.
"""
from __future__ import annotations

import datetime
import time
from typing import Dict, List, Optional, Sequence

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from fastmtl.config import ConfigError

from .cases import skip_reason
from .model_bench import MODEL_SIZES, ModelRunner, resolve_models
from .timing import device_name, triton_version

TOP = 25
NAME_WIDTH = 70


def _event_times(events, on_cuda: bool) -> List[Dict]:
    """``[{name, calls, total_ms}]`` of the averaged profiler ``events``: CUDA, the device events
    (kernels, memcpy/memset) by their device time; CPU, every op by its self CPU time."""
    out = []
    for e in events:
        if on_cuda:
            if e.device_type != DeviceType.CUDA:
                continue
            us = e.self_device_time_total
        else:
            us = e.self_cpu_time_total
        if us > 0:
            out.append({"name": e.key, "calls": e.count, "total_ms": us / 1e3})
    return sorted(out, key=lambda r: -r["total_ms"])


def profile_step(runner: ModelRunner, top: int = TOP) -> Dict:
    """The kernel table of one call of ``runner`` (already warmed up): ``{"time": "device"|"cpu",
    "wall_ms", "step_ms", "rows": [{name, calls, total_ms, percent}]}``, ``top`` rows."""
    on_cuda = runner.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    runner.synchronize()
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        runner()
        runner.synchronize()
        wall_ms = (time.perf_counter() - t0) * 1e3
    events = _event_times(prof.key_averages(), on_cuda)
    step_ms = sum(r["total_ms"] for r in events)
    rows = [dict(r, percent=100.0 * r["total_ms"] / step_ms if step_ms else None) for r in events[:top]]
    return {"time": "device" if on_cuda else "cpu", "wall_ms": wall_ms, "step_ms": step_ms, "rows": rows}


def run_kernel_table(models: Sequence[str], impls: Sequence[str], layouts: Sequence[str], device: str,
                     size: Optional[str] = None, top: int = TOP) -> Dict:
    """One kernel table per (model, layout, impl) train step (JSON-able, see :func:`format_kernel_table`);
    an impl the device cannot run is listed with its ``skipped`` reason, a failing one with its ``error``."""
    dev = torch.device(device)
    size = size or ("full" if dev.type == "cuda" else "small")
    if size not in MODEL_SIZES:
        raise ConfigError(f"--size must be one of {', '.join(MODEL_SIZES)} for --kernel-table, got {size!r}")
    tables = []
    for model, encoder in resolve_models(models):
        for layout in layouts:
            for impl in impls:
                entry = {"model": model, "encoder": encoder, "layout": layout, "impl": impl,
                         "skipped": skip_reason(impl, dev, allow_cpu_compile=True), "error": None}
                tables.append(entry)
                if entry["skipped"]:
                    continue
                try:
                    runner = ModelRunner(model, "train", impl, dev, size, encoder=encoder, layout=layout)
                    entry.update(profile_step(runner, top))
                    del runner
                except Exception as e:  # one broken table must not cost the others
                    entry["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                torch._dynamo.reset()
    batch, hw = MODEL_SIZES[size]
    return {"schema": "fastmtl-kernel-table/1",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": device_name(dev), "torch": torch.__version__, "triton": triton_version(),
            "size": size, "batch": batch, "input": list(hw), "top": top, "tables": tables}


def format_kernel_table(report: Dict) -> str:
    lines = [f"fastmtl bench --kernel-table  {report['date']}  {report['device']}  torch {report['torch']}  "
             f"triton {report['triton']}  size {report['size']} (batch {report['batch']} at "
             f"{report['input'][0]}x{report['input'][1]}); one profiled train step, top {report['top']}"]
    for t in report["tables"]:
        title = f"== {t['model']}@{t['encoder']} {t['layout']} {t['impl']}"
        if t["skipped"] or t["error"]:
            lines.append(f"{title}: " + (f"not profiled: {t['skipped']}" if t["skipped"] else f"FAILED: {t['error']}"))
            continue
        lines.append(f"{title}: {t['step_ms']:.2f} ms of {t['time']} time in the step ({t['wall_ms']:.1f} ms wall, profiled)")
        lines.append(f"{'name':{NAME_WIDTH}s} {'calls':>6s} {'total ms':>9s} {'% step':>7s}")
        for r in t["rows"]:
            name = r["name"] if len(r["name"]) <= NAME_WIDTH else r["name"][:NAME_WIDTH - 3] + "..."
            pct = "-" if r["percent"] is None else f"{r['percent']:.1f}"
            lines.append(f"{name:{NAME_WIDTH}s} {r['calls']:6d} {r['total_ms']:9.3f} {pct:>7s}")
    return "\n".join(lines)
