"""``fastmtl bench``: time fastmtl's fused ops against eager and ``torch.compile`` references.

For each op (``se_scale``, ``sigmoid_gate``, ``aspp``, ``silog``), each pass (``forward``,
``backward``, ``full`` = forward + backward) and each implementation:

* ``eager``: the plain-PyTorch reference (``fastmtl.kernels.<op>.*_reference``), autograd for
  the backward;
* ``compile``: ``torch.compile`` of that reference (inductor; its backward is the compiled one);
* ``fused``: the op ``torch.ops.fastmtl.<op>`` (Triton kernels on CUDA);
* ``fused_compile``: ``torch.compile`` of the op (inductor sees the custom op in its graph).

Inputs are those of training: they require grad, so ``forward`` is timed with autograd recording
(what a training forward pays), ``backward`` alone re-runs the retained graph of a forward done
outside the timing, and ``full`` is both. Shapes and arguments follow the fused modules: SE with
the residual tail and fp32 weights, the gate on the two channel halves of one conv output plus a
residual, the ASPP projection with a folded (frozen) BatchNorm + ReLU epilogue, SI-log on
log-depth predictions with fp32 metric targets (10% invalid).

Reported per row: the median time, the speed-up over ``eager`` and over ``compile``, the
achieved GB/s counted from the *fewest bytes the pass must move* (each input read once, each
output written once; the formulas are :func:`se_scale_bytes`, :func:`sigmoid_gate_bytes`,
:func:`aspp_bytes`, :func:`silog_bytes`), and that bandwidth as a fraction of the device's
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

Pure helpers (byte formulas, GB/s and speed-up arithmetic, report building) are separate from
the timing so tests can check them without timing anything; speed is never asserted.
"""
from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from fastmtl.config import ConfigError

OPS = ("se_scale", "sigmoid_gate", "aspp", "silog")
MODES = ("forward", "backward", "full")
IMPLS = ("eager", "compile", "fused", "fused_compile")
SIZES = ("small", "full")  # "tiny" is accepted too (tests), not advertised
ALL_SIZES = ("tiny",) + SIZES
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

CPU_TIMING_NOTE = ("CPU: time.perf_counter median of repeats; reference rows only -- the Triton kernels would "
                   "run in the Triton interpreter here, whose timing is meaningless")
CUDA_TIMING_NOTE = ("CUDA: triton.testing.do_bench median (CUDA events, L2 flushed before each call, warm-up), "
                    "inputs rotated among several sets larger than L2 together")

# Bytes of the copy that measures the device's bandwidth (per buffer; read + write are counted).
COPY_BYTES = {"tiny": 1 << 20, "small": 64 << 20, "full": 512 << 20}
# Largest ||fused - eager|| / ||eager|| (output and gradients) that is plain rounding, per dtype;
# larger values are flagged "!" in the table (the correctness tests are the real check).
REL_ERR_TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float32: 5e-3}
# What the rotating input sets must exceed together when the device's cache size is unknown (CPU).
DEFAULT_CACHE_BYTES = 32 << 20


# --------------------------------------------------------------------------- byte and FLOP formulas
def se_scale_bytes(n: int, c: int, h: int, w: int, cr: int, act_bytes: int, weight_bytes: int,
                   residual: bool = True) -> Dict[str, int]:
    """Fewest bytes of ``se_scale`` (``relu(x * gate(x) + identity)`` with ``residual``).

    ``E = N*C*H*W`` activations of ``act_bytes`` each, ``Wt = (2*C*Cr + C + Cr) * weight_bytes``
    (fc1, fc2 and their biases):

    * forward:  read x (+ identity), write out           -> (2 + residual) * E * s + Wt
    * backward: read dy, x (+ out, the ReLU mask),
      write dx (+ d_identity); read weights, write their grads -> (3 + 2*residual) * E * s + 2 * Wt
    * full: forward + backward.
    """
    e = n * c * h * w
    wt = (2 * c * cr + c + cr) * weight_bytes
    fwd = (3 if residual else 2) * e * act_bytes + wt
    bwd = (5 if residual else 3) * e * act_bytes + 2 * wt
    return {"forward": fwd, "backward": bwd, "full": fwd + bwd}


def sigmoid_gate_bytes(n: int, c: int, h: int, w: int, act_bytes: int, residual: bool = True) -> Dict[str, int]:
    """Fewest bytes of ``sigmoid_gate`` (``r + f * sigmoid(a)`` with ``residual``), ``E = N*C*H*W``:

    * forward:  read f, a (+ r), write out               -> (3 + residual) * E * s
    * backward: read grad, f, a, write df, da (dr is grad itself, no bytes) -> 5 * E * s
    * full: forward + backward.
    """
    e = n * c * h * w
    fwd = (4 if residual else 3) * e * act_bytes
    bwd = 5 * e * act_bytes
    return {"forward": fwd, "backward": bwd, "full": fwd + bwd}


def aspp_bytes(n: int, k: int, cb: int, cout: int, h: int, w: int, act_bytes: int, bias_bytes: int,
               affine_bytes: int) -> Dict[str, int]:
    """Fewest bytes of ``aspp_project`` (``relu((W @ concat(branches) + bias) * scale + shift)``).

    ``Ein = N*K*Cb*H*W`` branch elements, ``Eout = N*Cout*H*W``, ``Wt = Cout*K*Cb`` weights (all
    ``act_bytes``); ``bias (N, Cout)`` of ``bias_bytes``; ``scale``, ``shift (Cout,)`` of ``affine_bytes``:

    * forward:  read branches, W, bias, scale, shift; write out
      -> (Ein + Eout + Wt) * s + N*Cout*sb + 2*Cout*sa
    * backward: read grad, out (ReLU mask), branches, W, scale; write grad_branches, grad_W, grad_bias
      -> (2*Ein + 2*Eout + 2*Wt) * s + N*Cout*sb + Cout*sa
    * full: forward + backward.
    """
    p = h * w
    e_in, e_out, wt = n * k * cb * p, n * cout * p, cout * k * cb
    fwd = (e_in + e_out + wt) * act_bytes + n * cout * bias_bytes + 2 * cout * affine_bytes
    bwd = (2 * e_in + 2 * e_out + 2 * wt) * act_bytes + n * cout * bias_bytes + cout * affine_bytes
    return {"forward": fwd, "backward": bwd, "full": fwd + bwd}


def aspp_flops(n: int, k: int, cb: int, cout: int, h: int, w: int) -> Dict[str, int]:
    """GEMM FLOPs of ``aspp_project``: forward ``2*N*H*W*K*Cb*Cout``; backward twice that
    (branch and weight gradients); full the sum."""
    fwd = 2 * n * h * w * k * cb * cout
    return {"forward": fwd, "backward": 2 * fwd, "full": 3 * fwd}


def silog_bytes(n: int, h: int, w: int, pred_bytes: int, target_bytes: int, stats_bytes: int = 4) -> Dict[str, int]:
    """Fewest bytes of ``silog_stats`` (``E = N*H*W`` pixels):

    * forward:  read pred, target, write stats (N, 3)           -> E * (sp + st) + 3*N*sa
    * backward: read grad_stats (N, 3), pred, target, write dpred -> E * (2*sp + st) + 3*N*sa
    * full: forward + backward.
    """
    e = n * h * w
    fwd = e * (pred_bytes + target_bytes) + 3 * n * stats_bytes
    bwd = e * (2 * pred_bytes + target_bytes) + 3 * n * stats_bytes
    return {"forward": fwd, "backward": bwd, "full": fwd + bwd}


# --------------------------------------------------------------------------- arithmetic
def gbps(num_bytes: float, ms: float) -> float:
    """Achieved bandwidth in GB/s (1e9 bytes per second) of moving ``num_bytes`` in ``ms`` milliseconds."""
    return num_bytes / (ms * 1e-3) / 1e9


def tflops(flops: float, ms: float) -> float:
    """TFLOP/s of ``flops`` in ``ms`` milliseconds."""
    return flops / (ms * 1e-3) / 1e12


def speedup(baseline_ms: Optional[float], ms: Optional[float]) -> Optional[float]:
    """``baseline / ms`` (how many times faster than the baseline); None when either is missing."""
    if baseline_ms is None or ms is None or ms <= 0:
        return None
    return baseline_ms / ms


def input_sets(bytes_per_set: int, cache_bytes: int, lo: int = 2, hi: int = 64) -> int:
    """How many input sets to rotate so that together they are at least twice ``cache_bytes``
    (clamped to ``[lo, hi]``): consecutive calls then read from memory, not from the cache."""
    wanted = math.ceil(2 * cache_bytes / max(1, bytes_per_set))
    return max(lo, min(hi, wanted))


def add_derived(rows: List[Dict], copy_gbps: Optional[float]) -> List[Dict]:
    """Fill each timed row's ``gbps``, ``copy_fraction``, ``tflops``, ``speedup_vs_eager`` and
    ``speedup_vs_compile`` (against the ``eager`` / ``compile`` rows of the same op, case and
    mode). Rows without ``ms`` (skipped) get None. Returns ``rows`` (changed in place)."""
    base: Dict[Tuple[str, str, str, str], float] = {}
    for r in rows:
        if r.get("ms") is not None:
            base[(r["op"], r["case"], r["mode"], r["impl"])] = r["ms"]
    for r in rows:
        ms = r.get("ms")
        key = (r["op"], r["case"], r["mode"])
        r["gbps"] = gbps(r["bytes"], ms) if ms is not None else None
        r["copy_fraction"] = r["gbps"] / copy_gbps if r["gbps"] is not None and copy_gbps else None
        r["tflops"] = tflops(r["flops"], ms) if ms is not None and r.get("flops") else None
        r["speedup_vs_eager"] = speedup(base.get(key + ("eager",)), ms)
        r["speedup_vs_compile"] = speedup(base.get(key + ("compile",)), ms)
    return rows


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


# --------------------------------------------------------------------------- cases and inputs
@dataclass(frozen=True)
class Case:
    """One benchmarked shape of one op. ``dims`` holds the op's sizes (n, c, h, w, ...)."""

    op: str
    name: str
    dims: Tuple[Tuple[str, int], ...]
    note: str = ""

    def __getitem__(self, key: str) -> int:
        return dict(self.dims)[key]

    def __str__(self) -> str:
        return self.name


def _case(op: str, name: str, note: str = "", **dims: int) -> Case:
    return Case(op, name, tuple(dims.items()), note)


def cases(op: str, size: str) -> List[Case]:
    """The benchmarked shapes of ``op`` at ``size`` (``tiny``, ``small`` or ``full``)."""
    if op not in OPS:
        raise ConfigError(f"unknown op {op!r}; valid ops: {', '.join(OPS)}")
    if size not in ALL_SIZES:
        raise ConfigError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    if size == "tiny":
        return {
            "se_scale": [_case(op, "tiny 2x16x4x8", n=2, c=16, h=4, w=8)],
            "sigmoid_gate": [_case(op, "tiny 2x8x4x8", n=2, c=8, h=4, w=8)],
            "aspp": [_case(op, "tiny 2x4x8->8 4x4", n=2, k=4, cb=8, cout=8, h=4, w=4)],
            "silog": [_case(op, "tiny 2x8x16", n=2, h=8, w=16)],
        }[op]
    # full: batch 8 at 256x512, ResNet-34 with dilation F,T,T (output stride 8); small: batch 2 at 64x128
    n, div = (8, 1) if size == "full" else (2, 4)
    h4, w4 = 64 // div, 128 // div  # 1/4 of the input
    h8, w8 = h4 // 2, w4 // 2  # 1/8
    if op == "se_scale":
        return [
            _case(op, f"layer1 {n}x64x{h4}x{w4}", n=n, c=64, h=h4, w=w4),
            _case(op, f"layer2 {n}x128x{h8}x{w8}", n=n, c=128, h=h8, w=w8),
            _case(op, f"layer3 {n}x256x{h8}x{w8}", "dilated (F,T,T)", n=n, c=256, h=h8, w=w8),
            _case(op, f"layer4 {n}x512x{h8}x{w8}", "dilated (F,T,T)", n=n, c=512, h=h8, w=w8),
        ]
    if op == "sigmoid_gate":
        return [
            _case(op, f"1/4 {n}x256x{h4}x{w4}", n=n, c=256, h=h4, w=w4),
            _case(op, f"1/2 {n}x256x{2 * h4}x{2 * w4}", n=n, c=256, h=2 * h4, w=2 * w4),
        ]
    if op == "aspp":
        return [_case(op, f"OS8 {n}x4x256->256 {h8}x{w8}", "ASPP 512->256", n=n, k=4, cb=256, cout=256, h=h8, w=w8)]
    return [_case(op, f"{n}x{4 * h4}x{4 * w4}", n=n, h=4 * h4, w=4 * w4)]


@dataclass
class InputSet:
    """One set of inputs: ``args`` for the op / reference, ``leaves`` whose gradients the
    backward computes."""

    args: tuple
    leaves: List[torch.Tensor]
    out: Optional[object] = None
    grad_out: Optional[torch.Tensor] = None


def _randn(shape, gen, device, dtype, scale=1.0, grad=False) -> torch.Tensor:
    t = (torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * scale).to(dtype)
    return t.requires_grad_(grad)


def make_inputs(case: Case, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> InputSet:
    """Fresh random inputs for ``case`` (never zeros), as the fused modules pass them."""
    op = case.op
    if op == "se_scale":  # the ResNet block tail: relu(se(x) + identity); fp32 weights (autocast keeps them)
        n, c, h, w = case["n"], case["c"], case["h"], case["w"]
        cr = max(1, c // 16)
        x = _randn((n, c, h, w), gen, device, dtype, grad=True)
        identity = _randn((n, c, h, w), gen, device, dtype, grad=True)
        w1 = _randn((cr, c, 1, 1), gen, device, torch.float32, c ** -0.5, True)
        b1 = _randn((cr,), gen, device, torch.float32, 0.1, True)
        w2 = _randn((c, cr, 1, 1), gen, device, torch.float32, cr ** -0.5, True)
        b2 = _randn((c,), gen, device, torch.float32, 0.1, True)
        return InputSet((x, w1, b1, w2, b2, identity), [x, w1, b1, w2, b2, identity])
    if op == "sigmoid_gate":  # f and a: the two channel halves of one 2C-channel conv output, + residual
        n, c, h, w = case["n"], case["c"], case["h"], case["w"]
        y = _randn((n, 2 * c, h, w), gen, device, dtype, grad=True)
        f, a = y[:, :c], y[:, c:]
        r = _randn((n, c, h, w), gen, device, dtype, grad=True)
        return InputSet((f, a, r), [f, a, r])
    if op == "aspp":  # four branch outputs; eval-mode BatchNorm folded into scale/shift (frozen) + ReLU
        n, k, cb, cout, h, w = (case[d] for d in ("n", "k", "cb", "cout", "h", "w"))
        branches = [_randn((n, cb, h, w), gen, device, dtype, grad=True) for _ in range(k)]
        weight = _randn((cout, k * cb), gen, device, dtype, (k * cb) ** -0.5, True)
        bias = _randn((n, cout), gen, device, dtype, 0.1, True)
        scale = (torch.rand((cout,), generator=gen, device=device) + 0.5)
        shift = _randn((cout,), gen, device, torch.float32, 0.1)
        return InputSet((branches, weight, bias, scale, shift, True), [*branches, weight, bias])
    # silog: log-depth predictions in the activation dtype, fp32 metric targets with invalid pixels
    n, h, w = case["n"], case["h"], case["w"]
    target = torch.rand((n, 1, h, w), generator=gen, device=device) * 79 + 1
    invalid = torch.rand((n, 1, h, w), generator=gen, device=device) < 0.1
    target = torch.where(invalid, torch.zeros_like(target), target)
    pred = (target.clamp_min(1).log() + 0.1 * torch.randn((n, 1, h, w), generator=gen, device=device))
    pred = pred.to(dtype).requires_grad_()
    return InputSet((pred, target, None, None, 0.01, True), [pred])


def set_bytes(case: Case, dtype: torch.dtype) -> int:
    """Bytes of one input set's tensors (for choosing how many sets to rotate)."""
    s = torch.tensor([], dtype=dtype).element_size()
    if case.op == "se_scale":
        return 2 * case["n"] * case["c"] * case["h"] * case["w"] * s
    if case.op == "sigmoid_gate":
        return 3 * case["n"] * case["c"] * case["h"] * case["w"] * s
    if case.op == "aspp":
        return case["n"] * case["k"] * case["cb"] * case["h"] * case["w"] * s
    return case["n"] * case["h"] * case["w"] * (s + 4)


def bytes_moved(case: Case, dtype: torch.dtype) -> Dict[str, int]:
    """The fewest bytes per pass (``forward``/``backward``/``full``) of ``case`` in ``dtype``."""
    s = torch.tensor([], dtype=dtype).element_size()
    d = dict(case.dims)
    if case.op == "se_scale":
        return se_scale_bytes(d["n"], d["c"], d["h"], d["w"], max(1, d["c"] // 16), s, 4, residual=True)
    if case.op == "sigmoid_gate":
        return sigmoid_gate_bytes(d["n"], d["c"], d["h"], d["w"], s, residual=True)
    if case.op == "aspp":
        return aspp_bytes(d["n"], d["k"], d["cb"], d["cout"], d["h"], d["w"], s, s, 4)
    return silog_bytes(d["n"], d["h"], d["w"], s, 4)


def flops(case: Case) -> Optional[Dict[str, int]]:
    """GEMM FLOPs per pass for ``aspp``; None for the memory-bound ops."""
    if case.op != "aspp":
        return None
    return aspp_flops(*(case[k] for k in ("n", "k", "cb", "cout", "h", "w")))


def reference_fn(op: str) -> Callable:
    """The plain-PyTorch reference of ``op`` (public entry points of ``fastmtl.kernels``)."""
    if op == "se_scale":
        from fastmtl.kernels.se_scale import se_scale_reference
        return se_scale_reference
    if op == "sigmoid_gate":
        from fastmtl.kernels.sigmoid_gate import sigmoid_gate_reference
        return sigmoid_gate_reference
    if op == "aspp":
        from fastmtl.kernels.aspp import aspp_project_reference
        return aspp_project_reference
    from fastmtl.kernels.silog import silog_stats_reference
    return silog_stats_reference


def fused_fn(op: str) -> Callable:
    """The registered op ``torch.ops.fastmtl.<op>`` (Triton kernels on CUDA)."""
    reference_fn(op)  # importing the module registers the op
    name = {"aspp": "aspp_project", "silog": "silog_stats"}.get(op, op)
    return getattr(torch.ops.fastmtl, name)


# --------------------------------------------------------------------------- which rows run
def default_impls(device: torch.device) -> Tuple[str, ...]:
    """All four on CUDA; only ``eager`` on CPU."""
    return IMPLS if device.type == "cuda" else ("eager",)


def skip_reason(impl: str, device: torch.device, allow_cpu_compile: bool = False) -> Optional[str]:
    """Why ``impl`` is not timed on ``device`` (None: it is)."""
    from fastmtl.kernels.dispatch import kernel_mode, kernels_available

    if impl in ("fused", "fused_compile"):
        if not kernels_available(device):
            return ("Triton kernels run on CUDA only: on CPU the fused op runs the Triton interpreter (or the "
                    "reference), whose timing is meaningless")
        if kernel_mode() == "reference":
            return "FASTMTL_KERNELS=reference: the fused op would run the reference"
    if impl in ("compile", "fused_compile") and device.type == "cpu" and not allow_cpu_compile:
        return "torch.compile skipped on CPU: inductor compiles each shape for seconds here (ask for it explicitly)"
    return None


# --------------------------------------------------------------------------- runner
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
        for i, s in enumerate(self.sets):
            out = self.fn(*s.args)
            if i == 0:
                self.outputs = [_first(out).detach().clone()]
            if mode != "forward":
                gen = torch.Generator(device=self.device).manual_seed(seed + 1000 + i)
                s.grad_out = _randn(_first(out).shape, gen, self.device, _first(out).dtype)
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


# --------------------------------------------------------------------------- model level
MODEL_PHASES = ("inference", "train")
# (batch, (H, W)) per size; bf16 autocast on CUDA, fp32 on CPU.
MODEL_SIZES = {"tiny": (2, (32, 64)), "small": (2, (64, 128)), "full": (8, (256, 512))}


class ModelRunner:
    """One model-level benchmark: call it for one inference batch or one train step.

    ``build_model(Config(model=name), {"semseg": 19, "depth": 1}, fused=...)`` with the
    config's defaults (ResNet-34, SE, dilation F,T,T, ASPP, skip); ``compile`` impls wrap the
    model and the loss in ``torch.compile`` as ``fastmtl train --compile`` does. ``train``: Adam
    step on :class:`fastmtl.losses.MultiTaskLoss` (the default L1 log-depth loss) of a random
    batch; ``inference``: eval mode under ``no_grad``. bf16 autocast on CUDA. Construction runs
    ``warmup`` calls (compiling when asked).
    """

    def __init__(self, name: str, phase: str, impl: str, device, size: str, warmup: int = 2, seed: int = 0):
        from fastmtl.config import Config
        from fastmtl.data import DepthNormalizer
        from fastmtl.losses import MultiTaskLoss
        from fastmtl.models import build_model

        if phase not in MODEL_PHASES:
            raise ConfigError(f"unknown phase {phase!r}; valid: {', '.join(MODEL_PHASES)}")
        self.device = device = torch.device(device)
        self.phase, self.impl = phase, impl
        self.batch, (h, w) = MODEL_SIZES[size]
        self.amp = torch.bfloat16 if device.type == "cuda" else None
        cfg = Config(model=name)
        torch.manual_seed(seed)
        self.model = build_model(cfg, {"semseg": 19, "depth": 1}, fused=impl in ("fused", "fused_compile")).to(device)
        self.model.train(phase == "train")
        loss_fn = MultiTaskLoss(cfg.weight_semseg, cfg.weight_depth, cfg.depth_loss, DepthNormalizer("log", 2.5, 1.0))
        model = self.model
        if impl in ("compile", "fused_compile"):
            torch._dynamo.reset()
            model, loss_fn = torch.compile(model), torch.compile(loss_fn)
        self.run_model, self.loss_fn = model, loss_fn
        gen = torch.Generator(device=device).manual_seed(seed)
        self.x = torch.randn((self.batch, 3, h, w), generator=gen, device=device)
        self.semseg = torch.randint(0, 19, (self.batch, h, w), generator=gen, device=device)
        depth = torch.rand((self.batch, 1, h, w), generator=gen, device=device) * 79 + 1
        self.depth = torch.where(torch.rand(depth.shape, generator=gen, device=device) < 0.1, math.nan, depth)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4) if phase == "train" else None
        for _ in range(warmup):
            self()
        self.synchronize()

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def __call__(self):
        if self.phase == "inference":
            with torch.no_grad(), self._autocast():
                return self.run_model(self.x)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.run_model(self.x)
        loss, _ = self.loss_fn(out, self.semseg, self.depth)
        loss.backward()
        self.optimizer.step()
        return loss

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# --------------------------------------------------------------------------- timing
def device_cache_bytes(device: torch.device) -> int:
    """The last-level cache the rotating inputs must exceed: L2 on CUDA, a 32 MiB guess on CPU."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(getattr(props, "L2_cache_size", 0) or 50 << 20)
    return DEFAULT_CACHE_BYTES


def median_ms(fn: Callable, device: torch.device, *, repeats: Optional[int] = None, budget_s: float = 0.5,
              min_repeats: int = 5, max_repeats: int = 100) -> float:
    """Median milliseconds of ``fn()``.

    CUDA: ``triton.testing.do_bench(fn, return_mode="median")``. CPU: a warm-up call, then
    ``repeats`` timed calls (default: as many as fit in ``budget_s``, within
    ``[min_repeats, max_repeats]``), ``time.perf_counter`` around each.
    """
    device = torch.device(device)
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    t0 = time.perf_counter()
    fn()
    estimate = time.perf_counter() - t0
    if repeats is None:
        repeats = int(budget_s / max(estimate, 1e-6))
        repeats = max(min_repeats, min(max_repeats, repeats))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def copy_bandwidth(device: torch.device, num_bytes: int, repeats: Optional[int] = None) -> Dict[str, float]:
    """Measured copy bandwidth: ``dst.copy_(src)`` of ``num_bytes`` (fp32, random), counting
    read + write (``2 * num_bytes``) per copy."""
    device = torch.device(device)
    numel = max(1, num_bytes // 4)
    src = torch.rand(numel, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, repeats=repeats)
    moved = 2 * numel * 4
    return {"bytes": moved, "ms": ms, "gbps": gbps(moved, ms)}


# --------------------------------------------------------------------------- the command
def parse_list(text: Optional[str], valid: Sequence[str], what: str) -> List[str]:
    """``"a,b"`` -> ``["a", "b"]``, checked against ``valid`` (ConfigError names the bad value)."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what} needs at least one of {', '.join(valid)}")
    for t in items:
        if t not in valid:
            raise ConfigError(f"--{what}: unknown value {t!r}; valid: {', '.join(valid)}")
    return items


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bf16 on CUDA (the AMP dtype), fp32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@dataclass
class BenchOptions:
    ops: List[str] = field(default_factory=lambda: list(OPS))
    modes: List[str] = field(default_factory=lambda: list(MODES))
    impls: Optional[List[str]] = None  # None: default_impls(device)
    size: Optional[str] = None  # None: full on CUDA, small on CPU
    device: str = "cpu"
    dtype: str = "auto"
    progress: bool = False  # one line per row on stderr


BYTE_FORMULAS = {
    "se_scale": "fwd 3*E*s + Wt, bwd 5*E*s + 2*Wt  (E = N*C*H*W, Wt = fp32 fc weights + biases)",
    "sigmoid_gate": "fwd 4*E*s, bwd 5*E*s  (E = N*C*H*W)",
    "aspp": "fwd (Ein + Eout + Wt)*s, bwd 2*(Ein + Eout + Wt)*s  (+ bias, scale, shift)",
    "silog": "fwd E*(sp + st), bwd E*(2*sp + st)  (E = N*H*W, fp32 target)",
}
OP_DESCRIPTIONS = {
    "se_scale": "relu(x * SE-gate(x) + identity), the ResNet block tail",
    "sigmoid_gate": "r + f * sigmoid(a), f and a the halves of one conv output",
    "aspp": "ASPP projection: relu(BN(W @ concat(4 branches) + pooled bias)), frozen BN",
    "silog": "per-image SI-log sums (sum d, sum d^2, count), log-depth input",
}


def run_bench(opts: BenchOptions) -> Dict:
    """Time everything ``opts`` asks for; return the report (a JSON-able dict, printed by
    :func:`format_report`). Implementations that were not asked for, or cannot run on the device,
    appear as rows with ``ms = None`` and ``skipped`` saying why."""
    from fastmtl.kernels.dispatch import kernel_mode

    device = torch.device(opts.device)
    size = opts.size or ("full" if device.type == "cuda" else "small")
    if size not in ALL_SIZES:
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
                    row = {"op": op, "case": case.name, "note": case.note, "dims": dict(case.dims), "mode": mode,
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
        "triton": _triton_version(),
        "kernels_mode": kernel_mode(),
        "size": size,
        "dtype": str(dtype).replace("torch.", ""),
        "timer": CUDA_TIMING_NOTE if device.type == "cuda" else CPU_TIMING_NOTE,
        "threads": torch.get_num_threads(),
        "load_average": _load_average(),
        "copy": copy,
        "impls": listed,
        "byte_formulas": {op: BYTE_FORMULAS[op] for op in opts.ops},
        "rows": rows,
    }


def _fmt(value: Optional[float], spec: str, none: str = "-") -> str:
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _num(value: Optional[float]) -> str:
    """Three significant figures without exponents (GB/s, ms)."""
    if value is None or math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{max(1, 2 - math.floor(math.log10(value)))}f}" if value > 0 else "0"


def format_report(report: Dict) -> str:
    """Per op, a table of the timed rows; the implementations not timed are listed with the reason."""
    copy = report["copy"]
    lines = [
        f"fastmtl bench  {report['date']}  {report['device']}  torch {report['torch']}  triton {report['triton']}",
        f"size {report['size']}  dtype {report['dtype']}  FASTMTL_KERNELS={report['kernels_mode']}  "
        f"threads {report['threads']}  load average {report['load_average']}",
        f"timing: {report['timer']}",
        f"copy bandwidth: {copy['gbps']:.1f} GB/s  (dst.copy_(src), {copy['bytes'] / 2**20:.0f} MiB read+write, "
        f"{copy['ms']:.3f} ms)",
        "GB/s counts the fewest bytes each pass must move; % copy = GB/s / copy bandwidth; "
        "x eager / x compile = speed-up over the eager / torch.compile reference; "
        "rel err = max ||out - eager|| / ||eager|| over output and gradients",
    ]
    ops = list(dict.fromkeys(r["op"] for r in report["rows"]))
    for op in ops:
        rows = [r for r in report["rows"] if r["op"] == op]
        timed = [r for r in rows if r["ms"] is not None]
        with_flops = any(r.get("tflops") is not None for r in timed)
        lines += ["", f"== {op}: {OP_DESCRIPTIONS[op]}", f"   bytes: {report['byte_formulas'][op]}"]
        if timed:
            width = max(len(r["case"]) for r in timed)
            head = (f"{'case'.ljust(width)}  {'mode':8}  {'impl':13}  {'median ms':>10}  {'GB/s':>8}  {'% copy':>6}  "
                    f"{'x eager':>7}  {'x compile':>9}")
            head += f"  {'TFLOP/s':>7}" if with_flops else ""
            lines += [head + f"  {'rel err':>8}", "-" * (len(head) + 10)]
            for r in timed:
                line = (f"{r['case'].ljust(width)}  {r['mode']:8}  {r['impl']:13}  {_num(r['ms']):>10}  {_num(r['gbps']):>8}  "
                        f"{_fmt(None if r['copy_fraction'] is None else 100 * r['copy_fraction'], '5.1f'):>5}%  "
                        f"{_fmt(r['speedup_vs_eager'], '7.2f'):>7}  {_fmt(r['speedup_vs_compile'], '9.2f'):>9}")
                line += f"  {_fmt(r.get('tflops'), '7.2f'):>7}" if with_flops else ""
                flag = " !" if r.get("rel_err_ok") is False else ""
                lines.append(line + f"  {_fmt(r['rel_err'], '8.1e'):>8}{flag}")
        skipped: Dict[str, List[str]] = {}
        for r in rows:
            if r["skipped"] is not None and r["impl"] not in skipped.get(r["skipped"], []):
                skipped.setdefault(r["skipped"], []).append(r["impl"])
        for reason, impls in skipped.items():
            lines.append(f"   not timed: {', '.join(impls)}: {reason}")
        for r in rows:
            if r.get("error"):
                lines.append(f"   FAILED: {r['case']} {r['mode']} {r['impl']}: {r['error']}")
        if any(r.get("rel_err_ok") is False for r in rows):
            lines.append("   ! rel err above the rounding tolerance of the dtype: check the kernel before trusting its time")
    return "\n".join(lines)


def _load_average() -> Optional[List[float]]:
    """The 1/5/15-minute load averages (a shared machine's numbers depend on them); None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - not on Windows
        return None


def _triton_version() -> Optional[str]:
    try:
        import triton

        return triton.__version__
    except Exception:  # pragma: no cover - triton missing or broken
        return None
