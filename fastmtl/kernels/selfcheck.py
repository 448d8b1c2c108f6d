"""First-call self-check of the fused ops, with a fallback to their PyTorch references.

The first time a fused op is about to run its Triton kernels for a key ``(op, device, dtype,
layout)`` in a process, :func:`passes` runs that op's *probe* on the same device, dtype and
layout: a small random problem of odd shapes (fresh data every process) that goes through the
op's Triton launchers -- forward and backward together -- and through its plain-PyTorch
references, in the same dtype and in fp64. Every output and gradient must satisfy the
low-precision rule of the kernel tests::

    max|triton - ref64| <= 2 * max|reference_same_dtype - ref64| + atol[dtype] * max(max|ref64|, 1)

(``atol`` from :data:`ATOL`, as tests/test_kernels_cuda.py; a probe may loosen it, e.g. ASPP's
fp32 GEMMs in TF32 against a cuDNN reference that may not use TF32) and be free of NaN/inf
where the reference is. On a mismatch or an exception the op warns once
(:class:`SelfCheckWarning`: op, device, dtype/layout, the max abs difference or the exception)
and, for that key, runs its reference from then on -- forward and backward, since both ask
:func:`passes` with the same op name and the same input tensor (``x``, ``f``, ``pred``,
``branches[0]``). Other keys (another dtype, layout or device) keep their own verdicts.

Switch: ``FASTMTL_SELFCHECK=0`` turns the check off (read at every call; every op then trusts
its kernels). The test suite sets it to 0 by default (tests/conftest.py): under the Triton
interpreter every check costs interpreter time, and the kernel tests must see the kernels
themselves, never a silent fallback. :func:`check` runs a check explicitly, whatever the switch
(``fastmtl doctor`` uses it); :func:`results` lists the verdicts of this process.

Cost: one dict lookup per op call once a key is checked. The first call of a key runs the probe
(on a GPU: compiling the probe's kernel variants, a second or so per op the first time, then
Triton's on-disk cache). Never checked (the kernels are trusted): fake and meta tensors,
``torch.compile`` tracing, CUDA graph capture, and a call made while a check is running in the
same thread. A check holds a process-wide lock, so two threads never probe at once. A CUDA
error that corrupts the context (an illegal address) cannot be recovered from by any fallback.

Each op package provides its probe in its ``probe`` module (``<op>_probe(device, dtype,
channels_last, gen) -> Probe``, e.g. :func:`fastmtl.kernels.aspp.probe.aspp_project_probe`);
this module holds the shared harness only.
"""
from __future__ import annotations

import importlib
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._utils import out_memory_format

ENV_VAR = "FASTMTL_SELFCHECK"

# op name -> (probe module of fastmtl.kernels, probe function in it)
PROBES: Dict[str, Tuple[str, str]] = {
    "se_scale": ("se_scale.probe", "se_scale_probe"),
    "sigmoid_gate": ("sigmoid_gate.probe", "sigmoid_gate_probe"),
    "aspp_project": ("aspp.probe", "aspp_project_probe"),
    "silog_stats": ("silog.probe", "silog_stats_probe"),
    "bn_relu": ("bn_relu.probe", "bn_relu_probe"),
}
OPS = tuple(PROBES)
LAYOUTS = ("nchw", "channels_last")

# the absolute part of the tolerance, relative to max(max|ref64|, 1) (as tests/test_kernels_cuda.py)
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float64: 1e-10}


class SelfCheckWarning(RuntimeWarning):
    """A fused op failed its self-check and runs its PyTorch reference from now on (for that key)."""


@dataclass
class Probe:
    """A small random problem of one op. ``triton(*args)`` and ``reference(*args)`` each return
    the forward outputs followed by the backward's gradients, as one flat sequence of tensors
    in the same order; ``reference`` must also accept ``args`` converted to fp64."""

    args: tuple
    triton: Callable[..., Sequence[Tensor]]
    reference: Callable[..., Sequence[Tensor]]
    atol: Dict[torch.dtype, float] = field(default_factory=dict)  # overrides of :data:`ATOL`


@dataclass(frozen=True)
class Result:
    """The verdict for one key: ``ok``, or the ``error`` (max abs diff, or the exception)."""

    op: str
    device: str
    dtype: str
    layout: str
    ok: bool
    error: Optional[str] = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


_results: Dict[Tuple[str, torch.device, torch.dtype, str], Result] = {}  # (op, device, dtype, layout)
_lock = threading.Lock()
_local = threading.local()


def enabled() -> bool:
    """Whether the first-call check is on (``FASTMTL_SELFCHECK`` is not ``0``/``off``/``false``)."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "off", "false", "no")


def layout_of(x: Tensor) -> str:
    """``channels_last`` when ``x``'s channels are its innermost dim (the ops' output rule), else ``nchw``."""
    return "channels_last" if x.dim() == 4 and out_memory_format(x) == torch.channels_last else "nchw"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _untraceable(x: Tensor) -> bool:
    """Tensors and contexts in which no probe may run: fake/meta tensors, compile tracing,
    CUDA graph capture, or a check already running in this thread."""
    from torch._subclasses.fake_tensor import is_fake

    if x.device.type == "meta" or is_fake(x) or torch.compiler.is_compiling():
        return True
    if getattr(_local, "checking", False):
        return True
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def passes(op: str, x: Tensor) -> bool:
    """The dispatch hook: False when ``op``'s Triton kernels failed their self-check for
    ``x``'s (device, dtype, layout) -- then the op runs its reference. Runs the check on the
    first call of a key; True without checking when the switch is off or no probe can run."""
    if not enabled():
        return True
    layout = layout_of(x)
    result = _results.get((op, x.device, x.dtype, layout))
    if result is None:
        if _untraceable(x):
            return True
        result = check(op, x.device, x.dtype, layout == "channels_last")
    return result.ok


def check(op: str, device, dtype: torch.dtype, channels_last: bool, *, warn: bool = True) -> Result:
    """The verdict for ``op`` on ``(device, dtype, layout)``: cached, or computed now by
    running the op's probe (whatever :func:`enabled` says). A failure warns once (the first
    time it is found) when ``warn``."""
    if op not in PROBES:
        raise ValueError(f"unknown fused op {op!r}; valid: {', '.join(OPS)}")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    layout = "channels_last" if channels_last else "nchw"
    lookup = (op, device, dtype, layout)
    key = (op, str(device), _dtype_name(dtype), layout)
    with _lock:
        result = _results.get(lookup)
        if result is not None:
            return result
        _local.checking = True
        try:
            result = _run_probe(op, key, device, dtype, channels_last)
        finally:
            _local.checking = False
        _results[lookup] = result
    if not result.ok and warn:
        warnings.warn(
            f"fastmtl: {op} failed its self-check on {key[1]} ({key[2]}, {key[3]}): {result.error}; "
            f"{op} runs its PyTorch reference for {key[2]} {key[3]} tensors on {key[1]} from now on in this "
            f"process ({ENV_VAR}=0 turns the check off)",
            SelfCheckWarning, stacklevel=3,
        )
    return result


def results() -> List[Result]:
    """Every verdict of this process, in the order they were reached."""
    return list(_results.values())


def reset() -> None:
    """Forget every verdict (tests; a process that changed its kernels)."""
    with _lock:
        _results.clear()


# --------------------------------------------------------------------------- the harness
def _to64(obj):
    """``obj`` with every floating tensor (also inside lists/tuples) converted to fp64, layout kept."""
    if isinstance(obj, Tensor):
        return obj.to(torch.float64) if obj.is_floating_point() else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to64(o) for o in obj)
    return obj


def compare(got: Sequence[Tensor], ref: Sequence[Tensor], ref64: Sequence[Tensor], dtype: torch.dtype,
            atol: Optional[float] = None) -> Optional[str]:
    """None when every ``got`` tensor is within the tolerance rule (module docstring) of
    ``ref64``, else a description of the first that is not (its index and max abs diff).
    ``atol`` defaults to ``ATOL[dtype]``."""
    if not (len(got) == len(ref) == len(ref64)):
        return f"{len(got)} tensors from the kernels, {len(ref)} from the reference"
    atol = ATOL.get(dtype, 1e-5) if atol is None else atol
    for i, (g, r, r64) in enumerate(zip(got, ref, ref64)):
        if g.shape != r64.shape:
            return f"tensor {i}: shape {tuple(g.shape)}, reference {tuple(r64.shape)}"
        g64, r64 = g.detach().to(torch.float64), r64.detach().to(torch.float64)
        finite = torch.isfinite(r64)
        if not torch.equal(torch.isfinite(g64), finite):
            return f"tensor {i}: non-finite values where the reference has none (or the reverse)"
        if not finite.any():
            continue
        diff = (g64 - r64)[finite].abs().max().item()
        ref_err = (r.detach().to(torch.float64) - r64)[finite].abs().max().item()
        tol = 2 * ref_err + atol * max(r64[finite].abs().max().item(), 1.0)
        if not diff <= tol:
            return f"tensor {i}: max abs diff {diff:.3g} > tolerance {tol:.3g}"
    return None


def _run_probe(op: str, key, device: torch.device, dtype: torch.dtype, channels_last: bool) -> Result:
    t0 = time.perf_counter()
    try:
        module, name = PROBES[op]
        make_probe = getattr(importlib.import_module(f"{__package__}.{module}"), name)
        gen = torch.Generator(device=device)
        gen.seed()  # fresh data in every process; the global RNG is left alone
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            probe = make_probe(device, dtype, channels_last, gen)
            got = list(probe.triton(*probe.args))
            ref = list(probe.reference(*probe.args))
            ref64 = list(probe.reference(*_to64(probe.args)))
            error = compare(got, ref, ref64, dtype, probe.atol.get(dtype))
    except Exception as e:  # a kernel that does not compile or launch is a failed check
        text = str(e).strip().splitlines()
        error = f"{type(e).__name__}: {text[0] if text else ''}"[:300]
    return Result(*key, ok=error is None, error=error, seconds=round(time.perf_counter() - t0, 3))


def randn(shape, gen: torch.Generator, device, dtype: torch.dtype, channels_last: bool = False,
          scale: float = 1.0) -> Tensor:
    """Random normal data for probes (fp32 draws from ``gen``, then ``dtype``; channels_last for 4-d)."""
    t = (torch.randn(shape, generator=gen, device=device) * scale).to(dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t
