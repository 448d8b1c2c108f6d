"""``fastmtl bench --models``: images/s and peak memory of whole models, per implementation and layout.

Each row is one :class:`ModelRunner` (model ``NAME`` or ``NAME@ENCODER``, phase ``train`` or
``inference``, implementation ``eager`` / ``compile`` / ``fused`` / ``fused_compile`` /
``compile_graphs`` / ``fused_compile_graphs`` (:data:`IMPL_CONFIG`), memory layout ``nchw`` or
``channels_last``; bf16 autocast on CUDA, batch and input size from :data:`MODEL_SIZES`): the
trainer's own step (:class:`fastmtl.perf.step_runner.StepRunner`). Building it runs two warm-up
calls (compiling the compiled impls; the time is reported as ``warmup_s``), then ``steps``
calls are timed one by one (synchronized, ``time.perf_counter``): ``median_ms`` per call and
``images_per_s = batch / median``. ``peak_memory_mib`` is ``torch.cuda.max_memory_allocated``
over the timed calls (reset after the warm-up; None on CPU). ``selfcheck`` lists the fused ops
that failed their self-check in this process (their rows then time the reference for those
keys). Rows come in the order model, phase, layout, impl (as given); each is also appended, as it
finishes, as one JSON line to ``rows_jsonl`` (so a run killed by a timeout keeps what it measured).
Speed is reported, never asserted.
"""
from __future__ import annotations

import datetime
import json
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from fastmtl.config import Config, ConfigError
from fastmtl.kernels import selfcheck
from fastmtl.models import ENCODERS, MODEL_NAMES

from .cases import default_impls, skip_reason
from .report import format_number, format_value, speedup
from .step_runner import StepRunner
from .timing import device_name, triton_version

MODEL_PHASES = ("inference", "train")
# the memory layout of the model and its input batch (Config.channels_last)
LAYOUTS = ("nchw", "channels_last")
# (batch, (H, W)) per size; bf16 autocast on CUDA, fp32 on CPU.
MODEL_SIZES = {"tiny": (2, (32, 64)), "small": (2, (64, 128)), "full": (8, (256, 512))}
# the Config knobs of each implementation
IMPL_CONFIG = {"eager": dict(fused=False, compile=False), "compile": dict(fused=False, compile=True),
               "fused": dict(fused=True, compile=False), "fused_compile": dict(fused=True, compile=True),
               "compile_graphs": dict(fused=False, compile=True, cuda_graphs=True),
               "fused_compile_graphs": dict(fused=True, compile=True, cuda_graphs=True)}


class ModelRunner:
    """One model-level benchmark: call it for one inference batch or one train step.

    The default config (ResNet-34, SE, dilation F,T,T, ASPP, skip, its tasks, loss and optimizer)
    with ``model=name`` (``encoder`` when given), the implementation's knobs (:data:`IMPL_CONFIG`:
    ``compile`` wraps model and loss in ``torch.compile`` as ``fastmtl train --compile`` does, the
    ``_graphs`` impls as ``--cuda-graphs`` does) and the ``layout`` (:data:`LAYOUTS`), built and stepped as the
    trainer does (:class:`~fastmtl.perf.step_runner.StepRunner`) on a random batch of ``size``
    (:data:`MODEL_SIZES`). ``train``: one train step; ``inference``: eval mode under ``no_grad``.
    bf16 autocast on CUDA. Construction runs ``warmup`` calls (compiling when asked).
    """

    def __init__(self, name: str, phase: str, impl: str, device, size: str, warmup: int = 2, seed: int = 0,
                 encoder: Optional[str] = None, layout: str = "nchw"):
        if phase not in MODEL_PHASES:
            raise ConfigError(f"unknown phase {phase!r}; valid: {', '.join(MODEL_PHASES)}")
        if impl not in IMPL_CONFIG:
            raise ConfigError(f"unknown implementation {impl!r}; valid: {', '.join(IMPL_CONFIG)}")
        if layout not in LAYOUTS:
            raise ConfigError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
        self.phase, self.impl, self.layout = phase, impl, layout
        batch, hw = MODEL_SIZES[size]
        if IMPL_CONFIG[impl]["compile"]:
            torch._dynamo.reset()
        knobs = dict(IMPL_CONFIG[impl], channels_last=layout == "channels_last", **({"encoder": encoder} if encoder else {}))
        self.runner = StepRunner(Config(model=name, **knobs).validate(), device, batch, hw, seed=seed)
        self.device, self.batch, self.amp = self.runner.device, batch, self.runner.amp
        for _ in range(warmup):
            self()
        self.synchronize()

    def __call__(self):
        return self.runner.infer() if self.phase == "inference" else self.runner.train()

    def synchronize(self) -> None:
        self.runner.synchronize()


def resolve_models(specs: Sequence[str]) -> List[Tuple[str, str]]:
    """``(model, encoder)`` of each ``NAME`` or ``NAME@ENCODER`` (``default``: the config's default
    model; no encoder: the config's default encoder); an unknown name is a ConfigError naming --models."""
    out = []
    for spec in specs:
        name, _, encoder = spec.partition("@")
        name = Config().model if name == "default" else name
        if name not in MODEL_NAMES:
            raise ConfigError(f"--models: unknown value {name!r}; valid: default, {', '.join(MODEL_NAMES)} "
                              "(each optionally @ENCODER)")
        encoder = encoder or Config().encoder
        if encoder not in ENCODERS:
            raise ConfigError(f"--models: unknown encoder {encoder!r} in {spec!r}; valid: {', '.join(ENCODERS)}")
        out.append((name, encoder))
    return out


def time_steps(runner: ModelRunner, steps: int) -> List[float]:
    """Milliseconds of each of ``steps`` synchronized calls of ``runner``."""
    times = []
    for _ in range(steps):
        runner.synchronize()
        t0 = time.perf_counter()
        runner()
        runner.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _time_row(row: Dict, runner_args: Dict, dev: torch.device, steps: int) -> None:
    """Build one :class:`ModelRunner` and fill ``row``'s timings (or its ``error``) in place."""
    try:
        t0 = time.perf_counter()
        runner = ModelRunner(device=dev, **runner_args)
        row["warmup_s"] = round(time.perf_counter() - t0, 1)
        row["amp"] = str(runner.amp).replace("torch.", "") if runner.amp is not None else "off"
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        row["median_ms"] = statistics.median(time_steps(runner, steps))
        row["images_per_s"] = row["batch"] / (row["median_ms"] * 1e-3)
        if dev.type == "cuda":
            row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        del runner
    except Exception as e:  # one broken row must not cost the whole (device-time) run
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    torch._dynamo.reset()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _eager_key(row: Dict) -> Tuple:
    return row["model"], row["encoder"], row["phase"], row["layout"]


def run_model_bench(models: Sequence[str], phases: Sequence[str], impls: Optional[Sequence[str]], device: str,
                    size: Optional[str] = None, steps: Optional[int] = None, progress: bool = False,
                    layouts: Sequence[str] = ("nchw",), rows_jsonl: Optional[str] = None) -> Dict:
    """Time every (model, phase, layout, impl), in that order; return the results (JSON-able, see
    :func:`format_model_report`). ``models``: ``NAME`` or ``NAME@ENCODER``; ``impls`` None: the
    four unfused/fused ones on CUDA, eager on CPU; ``steps`` None: 10 on CUDA, 3 on CPU;
    ``rows_jsonl``: a file each row is appended to (one JSON line, flushed) as it finishes."""
    dev = torch.device(device)
    size = size or ("full" if dev.type == "cuda" else "small")
    if size not in MODEL_SIZES:
        raise ConfigError(f"--size must be one of {', '.join(MODEL_SIZES)} for --models, got {size!r}")
    steps = (10 if dev.type == "cuda" else 3) if steps is None else steps
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    explicit = impls is not None
    impls = list(impls) if explicit else list(default_impls(dev))
    specs = resolve_models(models)
    sink = open(rows_jsonl, "a") if rows_jsonl else None  # OSError: a one-line error naming the file
    rows: List[Dict] = []
    eager: Dict[Tuple, Optional[float]] = {}
    batch, (h, w) = MODEL_SIZES[size]
    try:
        for model, encoder in specs:
            for phase in phases:
                for layout in layouts:
                    for impl in impls:
                        row = {"model": model, "encoder": encoder, "phase": phase, "layout": layout, "impl": impl,
                               "batch": batch, "input": [h, w], "steps": steps, "median_ms": None,
                               "images_per_s": None, "peak_memory_mib": None, "warmup_s": None,
                               "skipped": skip_reason(impl, dev, allow_cpu_compile=explicit), "error": None}
                        rows.append(row)
                        if not row["skipped"]:
                            if progress:
                                print(f"bench: model {model}@{encoder} {phase} {layout} {impl}", file=sys.stderr, flush=True)
                            _time_row(row, dict(name=model, encoder=encoder, phase=phase, impl=impl, size=size,
                                                layout=layout), dev, steps)
                        if impl == "eager":
                            eager[_eager_key(row)] = row["median_ms"]
                        row["speedup_vs_eager"] = speedup(eager.get(_eager_key(row)), row["median_ms"])
                        if sink is not None:
                            sink.write(json.dumps(row) + "\n")
                            sink.flush()
    finally:
        if sink is not None:
            sink.close()
    for r in rows:  # an eager row listed after its impls
        r["speedup_vs_eager"] = speedup(eager.get(_eager_key(r)), r["median_ms"])
    return {
        "schema": "fastmtl-bench-models/1",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(dev), "torch": torch.__version__, "triton": triton_version(),
        "size": size, "timer": "time.perf_counter around each synchronized call, median",
        "selfcheck_fallbacks": [r.to_dict() for r in selfcheck.results() if not r.ok],
        "rows": rows,
    }


def format_model_report(report: Dict) -> str:
    """The text table of a :func:`run_model_bench` report (a partial one, read back from the rows
    JSON lines, may lack the header fields: they print as ``?``)."""
    head = {k: report.get(k, "?") for k in ("date", "device", "torch", "triton", "size")}
    lines = [f"fastmtl bench --models  {head['date']}  {head['device']}  torch {head['torch']}  "
             f"triton {head['triton']}  size {head['size']}",
             f"timing: {report.get('timer', '?')}; peak memory: torch.cuda.max_memory_allocated over the timed steps",
             f"{'model':26s} {'phase':10s} {'layout':13s} {'impl':20s} {'batch':>5s} {'median ms':>10s} {'images/s':>9s} "
             f"{'x eager':>7s} {'peak MiB':>9s} {'warm-up s':>9s}"]
    for r in report["rows"]:
        model = f"{r['model']}@{r['encoder']}" if r.get("encoder") else r["model"]
        lead = f"{model:26s} {r['phase']:10s} {r.get('layout', 'nchw'):13s} {r['impl']:20s}"
        if r["skipped"] or r["error"]:
            lines.append(f"{lead} " + (f"not timed: {r['skipped']}" if r["skipped"] else f"FAILED: {r['error']}"))
            continue
        lines.append(f"{lead} {r['batch']:5d} {format_number(r['median_ms']):>10s} "
                     f"{format_number(r['images_per_s']):>9s} {format_value(r['speedup_vs_eager'], '7.2f'):>7s} "
                     f"{format_value(r['peak_memory_mib'], '9.0f'):>9s} {format_value(r['warmup_s'], '9.1f'):>9s}")
    for f in report.get("selfcheck_fallbacks", []):
        lines.append(f"! self-check fallback: {f['op']} {f['dtype']} {f['layout']} on {f['device']}: {f['error']}")
    return "\n".join(lines)
