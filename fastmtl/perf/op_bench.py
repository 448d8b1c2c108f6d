"""``fastmtl bench``: time fastmtl's fused ops against eager and ``torch.compile`` references.

For each op (``se_scale``, ``sigmoid_gate``, ``aspp``, ``silog``, ``bn_relu``), each pass
(``forward``, ``backward``, ``full`` = forward + backward) and each implementation:

* ``eager``: the unfused path as the model runs it under autocast (:mod:`fastmtl.perf.unfused`
  for SE, the attention gate and BatchNorm + ReLU: half-precision activations, no fp32 upcast;
  the ASPP projection and SI-log references of ``fastmtl.kernels``, which compute in the
  branches' dtype and, as the loss does, in fp32), autograd for the backward;
* ``compile``: ``torch.compile`` of that reference (inductor; its backward is the compiled one);
* ``fused``: the op ``torch.ops.fastmtl.<op>`` (Triton kernels on CUDA); for ``bn_relu``, which
  has no autograd formula of its own (it updates the running statistics in place), its
  differentiable entry point ``fastmtl.kernels.bn_relu.batch_norm_relu``;
* ``fused_compile``: ``torch.compile`` of the op (inductor sees the custom op in its graph).

Inputs are those of training: they require grad, so ``forward`` is timed with autograd recording
(what a training forward pays), ``backward`` alone re-runs the retained graph of a forward done
outside the timing, and ``full`` is both. Shapes and arguments follow the fused modules: SE with
the residual tail and fp32 weights, the gate on the two channel halves of one conv output plus a
residual, the ASPP projection with a folded (frozen) BatchNorm + ReLU epilogue, SI-log on
log-depth predictions with fp32 metric targets (10% invalid), BatchNorm + ReLU in training
(batch statistics, fp32 weight, bias and running statistics) on channels_last activations (the
case's ``layout``; every other case is NCHW). The backward's output gradient has the output's
layout.

Reported per row: the median time, the speed-up over ``eager`` and over ``compile``, the
achieved GB/s counted from the *fewest bytes the pass must move* (each input read once, each
output written once; the formulas of :mod:`fastmtl.perf.cases`: ``se_scale_bytes``,
``sigmoid_gate_bytes``, ``aspp_bytes``, ``silog_bytes``, ``bn_relu_bytes``), and that bandwidth as a fraction of the device's
copy bandwidth measured in the same run (a large ``dst.copy_(src)``, read + write bytes).

Timing. CUDA: ``triton.testing.do_bench`` (CUDA events around each call, L2 flushed before each
call, warm-up, median), the inputs rotated among several sets whose total size is at least twice
the L2 cache. CPU: ``time.perf_counter`` median of repeats, and only the reference rows: fused
rows would run the Triton interpreter (or the reference again under ``FASTMTL_KERNELS=auto``),
whose timing means nothing; ``compile`` rows only when asked for (inductor compiles each shape
for seconds on CPU).

Sizes (``--size``): ``full`` (default on CUDA) is batch 8 at a 256x512 input, the shapes of the
default model (ResNet-34 with dilation F,T,T, i.e. output stride 8); ``small`` (default on CPU)
is batch 2 at 64x128; ``tiny`` (for tests) is a few hundred elements per tensor.

This module is the runner (:class:`OpRunner`, :func:`run_bench`); the case table, byte formulas and
implementation rules are :mod:`fastmtl.perf.cases`, the timing :mod:`fastmtl.perf.timing`, the
derived columns and tables :mod:`fastmtl.perf.report` (pure helpers, testable without timing
anything; speed is never asserted).
"""
from __future__ import annotations

import contextlib
import datetime
import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from fastmtl.config import ConfigError
from fastmtl.kernels.aspp import aspp_project_reference
from fastmtl.kernels.bn_relu import batch_norm_relu
from fastmtl.kernels.dispatch import kernel_mode
from fastmtl.kernels.silog import silog_stats_reference
from fastmtl.runtime import AMP_DTYPES, amp_dtype_for

from . import unfused
from .cases import (BYTE_FORMULAS, IMPLS, MODES, OPS, SIZES, Case, InputSet, randn, bytes_moved, cases,
                    default_impls, flops, make_inputs, set_bytes, skip_reason)
from .report import add_derived
from .timing import (COPY_BYTES, CPU_TIMING_NOTE, CUDA_TIMING_NOTE, copy_bandwidth, device_cache_bytes, device_name,
                     input_sets, load_average, median_ms, triton_version)

# Largest ||fused - eager|| / ||eager|| (output and gradients) that is plain rounding, per dtype;
# larger values are flagged "!" in the table (the correctness tests are the real check).
# The activation dtypes of --dtype: the AMP dtypes and fp32.
DTYPES = {**{name: dtype for name, dtype in AMP_DTYPES.items() if dtype is not None}, "fp32": torch.float32}
REL_ERR_TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float32: 5e-3}



def rel_err(got: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> float:
    """The largest ``||got - ref|| / ||ref||`` over pairs of tensors (fp64); NaN anywhere -> NaN."""
    worst = 0.0
    for g, r in zip(got, ref):
        g, r = g.detach().double(), r.detach().double()
        denom = r.norm().item()
        err = (g - r).norm().item() / (denom if denom > 0 else 1.0)
        if math.isnan(err):
            return math.nan
        worst = max(worst, err)
    return worst



def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` -> the AMP dtype of ``device`` (bf16 on CUDA), fp32 where there is none (CPU)."""
    if name == "auto":
        return amp_dtype_for("auto", device) or torch.float32
    if name not in DTYPES:
        raise ConfigError(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


REFERENCES = {"se_scale": unfused.se_block_tail, "sigmoid_gate": unfused.gated_residual,
              "aspp": aspp_project_reference, "silog": silog_stats_reference, "bn_relu": unfused.batch_norm_then_relu}


def reference_fn(op: str) -> Callable:
    """The unfused path of ``op`` that the ``eager`` and ``compile`` rows time (:data:`REFERENCES`)."""
    return REFERENCES[op]


def fused_fn(op: str) -> Callable:
    """The registered op ``torch.ops.fastmtl.<op>`` (Triton kernels on CUDA); for ``bn_relu`` the
    differentiable :func:`~fastmtl.kernels.bn_relu.batch_norm_relu` around it (the op, which
    mutates the running statistics, has no autograd formula)."""
    if op == "bn_relu":
        return batch_norm_relu
    name = {"aspp": "aspp_project", "silog": "silog_stats"}.get(op, op)
    return getattr(torch.ops.fastmtl, name)



class OpRunner:
    """One benchmarked (case, mode, impl): call it to run one pass on the next input set.

    Construction builds ``sets`` input sets, runs the pass once on each (warm-up; compiles
    ``compile`` impls) and, for ``backward``, keeps each set's forward graph so the timed call is
    the backward alone (``torch.autograd.grad(..., retain_graph=True)``: fresh gradients, no
    accumulation into ``.grad``). ``outputs`` holds set 0's forward output (and, for the
    backward passes, the gradients) for the correctness check against ``eager``.
    """

    def __init__(self, case: Case, mode: str, impl: str, device, dtype: torch.dtype,
                 sets: Optional[int] = None, seed: int = 0, cache_bytes: Optional[int] = None):
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        if impl not in IMPLS:
            raise ConfigError(f"unknown implementation {impl!r}; valid: {', '.join(IMPLS)}")
        self.case, self.mode, self.impl = case, mode, impl
        self.device = torch.device(device)
        self.dtype = dtype
        fn = reference_fn(case.op) if impl in ("eager", "compile") else fused_fn(case.op)
        if impl in ("compile", "fused_compile"):
            torch._dynamo.reset()  # one runner at a time: no recompile-limit fallback to eager
            fn = torch.compile(fn, dynamic=False)
        self.fn = fn
        if sets is None:
            sets = input_sets(set_bytes(case, dtype), cache_bytes or device_cache_bytes(self.device))
        self.sets: List[InputSet] = []
        for i in range(sets):
            gen = torch.Generator(device=self.device).manual_seed(seed + i)
            self.sets.append(make_inputs(case, self.device, dtype, gen))
        self.bytes = bytes_moved(case, dtype)[mode]
        f = flops(case)
        self.flops = f[mode] if f else None
        self.outputs: List[torch.Tensor] = []
        with _replayable_backward(mode == "backward"):  # the compiles happen here, at the first calls
            for i, s in enumerate(self.sets):
                out = self.fn(*s.args)
                if i == 0:
                    self.outputs = [_first(out).detach().clone()]
                if mode != "forward":
                    gen = torch.Generator(device=self.device).manual_seed(seed + 1000 + i)
                    g = randn(_first(out).shape, gen, self.device, _first(out).dtype)
                    s.grad_out = torch.empty_like(_first(out)).copy_(g)  # in the output's layout, as autograd passes it
                    grads = torch.autograd.grad(out, s.leaves, s.grad_out, retain_graph=mode == "backward")
                    if i == 0:
                        self.outputs += [g.detach().clone() for g in grads]
                    if mode == "backward":
                        s.out = out
        self._next = 0
        self.synchronize()

    def __call__(self):
        s = self.sets[self._next]
        self._next = (self._next + 1) % len(self.sets)
        if self.mode == "forward":
            return self.fn(*s.args)
        if self.mode == "backward":
            return torch.autograd.grad(s.out, s.leaves, s.grad_out, retain_graph=True)
        return torch.autograd.grad(self.fn(*s.args), s.leaves, s.grad_out)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)



def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out



def _replayable_backward(replay: bool):
    """With ``replay`` (the ``backward`` pass, which re-runs one retained graph), compile without
    AOTAutograd's donated buffers: a compiled backward that donates its saved buffers (Inductor's
    for ``F.batch_norm`` + ReLU does) refuses ``retain_graph=True``. Without ``replay``, or on a
    torch without the setting, nothing changes."""
    from torch._functorch import config  # loaded by torch.compile, not by import torch

    if replay and hasattr(config, "donated_buffer"):
        return config.patch(donated_buffer=False)
    return contextlib.nullcontext()



@dataclass
class BenchOptions:
    ops: List[str] = field(default_factory=lambda: list(OPS))
    modes: List[str] = field(default_factory=lambda: list(MODES))
    impls: Optional[List[str]] = None  # None: default_impls(device)
    size: Optional[str] = None  # None: full on CUDA, small on CPU
    device: str = "cpu"
    dtype: str = "auto"
    progress: bool = False  # one line per row on stderr



def run_bench(opts: BenchOptions) -> Dict:
    """Time everything ``opts`` asks for; return the results (a JSON-able dict, printed by
    :func:`fastmtl.perf.report.format_report`). Implementations that were not asked for, or cannot run on the device,
    appear as rows with ``ms = None`` and ``skipped`` saying why."""
    device = torch.device(opts.device)
    size = opts.size or ("full" if device.type == "cuda" else "small")
    if size not in SIZES:
        raise ConfigError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    dtype = resolve_dtype(opts.dtype, device)
    explicit = opts.impls is not None
    wanted = list(opts.impls) if explicit else list(default_impls(device))
    listed = [i for i in IMPLS if i in wanted] if explicit else list(IMPLS)
    repeats = 3 if size == "tiny" else None
    sets = 2 if size == "tiny" else None
    copy = copy_bandwidth(device, COPY_BYTES[size], repeats=repeats)

    rows: List[Dict] = []
    for op in opts.ops:
        for case in cases(op, size):
            for mode in opts.modes:
                eager_outputs = None
                for impl in listed:
                    f = flops(case)
                    row = {"op": op, "case": case.name, "note": case.note, "layout": case.layout, "dims": dict(case.dims),
                           "mode": mode,
                           "impl": impl, "bytes": bytes_moved(case, dtype)[mode], "flops": f[mode] if f else None,
                           "ms": None, "rel_err": None, "skipped": None, "error": None}
                    rows.append(row)
                    reason = skip_reason(impl, device, allow_cpu_compile=explicit)
                    if reason is None and impl not in wanted:
                        reason = "not asked for (--impls)"
                    if reason is not None:
                        row["skipped"] = reason
                        continue
                    if opts.progress:
                        print(f"bench: {op} {case.name} {mode} {impl}", file=sys.stderr, flush=True)
                    try:
                        runner = OpRunner(case, mode, impl, device, dtype, sets=sets)
                        row["ms"] = median_ms(runner, device, repeats=repeats)
                    except Exception as e:  # one broken row must not cost the whole (device-time) run
                        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                        runner = None
                    if runner is not None:
                        row["sets"] = len(runner.sets)
                        if impl == "eager":
                            eager_outputs = runner.outputs
                        elif eager_outputs is not None:
                            row["rel_err"] = rel_err(runner.outputs, eager_outputs)
                            row["rel_err_ok"] = bool(row["rel_err"] <= REL_ERR_TOL.get(dtype, 1e-3))
                    del runner
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    add_derived(rows, copy["gbps"])
    return {
        "schema": "fastmtl-bench/1",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton_version(),
        "kernels_mode": kernel_mode(),
        "size": size,
        "dtype": str(dtype).replace("torch.", ""),
        "timer": CUDA_TIMING_NOTE if device.type == "cuda" else CPU_TIMING_NOTE,
        "threads": torch.get_num_threads(),
        "load_average": load_average(),
        "copy": copy,
        "impls": listed,
        "byte_formulas": {op: BYTE_FORMULAS[op] for op in opts.ops},
        "rows": rows,
    }
