"""The table of cases the compile gate and the traffic model run: one place, from the bench.

A case is a ``fastmtl.perf.cases`` shape (:func:`fastmtl.perf.cases.cases`) of one op, with its inputs from
:func:`fastmtl.perf.cases.make_inputs` (the fused modules' arguments), in one dtype and layout, and one
**variant**: a code path of the op that the bench's arguments do not take (no residual, ASPP
train mode, ...). Variants change the op's *arguments* only (its public API), never a kernel's
parameters, so the launchers' own heuristics decide everything else.

:func:`run_case` runs a case's forward and backward (autograd, as training does) on the fake CUDA
device of :mod:`.harness` and returns each pass's :class:`~.harness.Timeline`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence

import torch

from fastmtl.perf import cases as op_cases
from fastmtl.perf import op_bench

from fastmtl.perf.aot.harness import Timeline, fake_cuda

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
LAYOUTS = ("nchw", "channels_last")
PASSES = ("forward", "backward")
IMPLS = ("fused", "eager")


def _drop_last_arg(s: op_cases.InputSet) -> op_cases.InputSet:
    """Without the optional residual (the op's last argument)."""
    return replace(s, args=s.args[:-1], leaves=[t for t in s.leaves if t is not s.args[-1]])


def _aspp_scale_grad(s: op_cases.InputSet) -> op_cases.InputSet:
    """Eval mode with a trainable BatchNorm: scale and shift need gradients (the op recomputes
    the pre-epilogue output for the scale gradient)."""
    branches, weight, bias, scale, shift, relu = s.args
    scale, shift = scale.requires_grad_(), shift.requires_grad_()
    return replace(s, args=(branches, weight, bias, scale, shift, relu), leaves=[*s.leaves, scale, shift])


def _aspp_train(s: op_cases.InputSet) -> op_cases.InputSet:
    """Train mode: the projection alone (batch-statistics BatchNorm and ReLU run after it in torch)."""
    branches, weight, bias = s.args[:3]
    return replace(s, args=(branches, weight, bias))


def _silog_metres(s: op_cases.InputSet) -> op_cases.InputSet:
    """Predictions in metres (``log_input=False``), the metric's path."""
    return replace(s, args=s.args[:5] + (False,))


def _bn_no_running(s: op_cases.InputSet) -> op_cases.InputSet:
    """``track_running_stats=False``: no running statistics to update."""
    x, weight, bias, _, _, momentum, eps = s.args
    return replace(s, args=(x, weight, bias, None, None, momentum, eps))


def _bn_no_affine(s: op_cases.InputSet) -> op_cases.InputSet:
    """``affine=False``: no weight and bias (nor their gradients)."""
    x, weight, bias, *rest = s.args
    return replace(s, args=(x, None, None, *rest), leaves=[t for t in s.leaves if t is not weight and t is not bias])


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    transform: Optional[Callable[[op_cases.InputSet], op_cases.InputSet]] = None  # None: the bench's arguments


VARIANTS: Dict[str, List[Variant]] = {
    "se_scale": [Variant("residual", "relu(x * gate + identity), the ResNet block tail (bench)"),
                 Variant("plain", "x * gate, no residual", _drop_last_arg)],
    "sigmoid_gate": [Variant("residual", "r + f * sigmoid(a) (bench)"),
                     Variant("plain", "f * sigmoid(a), no residual", _drop_last_arg)],
    "aspp": [Variant("eval", "folded frozen BN + ReLU epilogue (bench)"),
             Variant("eval_bn_grad", "folded BN + ReLU, scale/shift need gradients", _aspp_scale_grad),
             Variant("train", "no epilogue (batch BN after, in torch)", _aspp_train)],
    "silog": [Variant("log_input", "log-depth predictions (bench)"),
              Variant("metres", "predictions in metres", _silog_metres)],
    "bn_relu": [Variant("batch_stats", "batch statistics, affine, running statistics updated (bench)"),
                Variant("no_running", "track_running_stats=False", _bn_no_running),
                Variant("no_affine", "affine=False", _bn_no_affine)],
}


@dataclass(frozen=True)
class AotCase:
    """One bench shape of one op in one dtype, layout and variant."""

    op: str
    shape: op_cases.Case
    variant: Variant
    dtype: str
    layout: str

    @property
    def name(self) -> str:
        return f"{self.op} {self.shape.name} {self.variant.name} {self.dtype} {self.layout}"

    def inputs(self) -> op_cases.InputSet:
        """The inputs (call on the fake device): the bench's in this case's layout, then the
        variant's change."""
        shape = replace(self.shape, layout=self.layout)
        s = op_cases.make_inputs(shape, torch.device("cuda"), DTYPES[self.dtype], torch.Generator().manual_seed(0))
        return self.variant.transform(s) if self.variant.transform else s


def all_cases(size: str = "full", ops: Optional[Sequence[str]] = None, dtypes: Sequence[str] = tuple(DTYPES),
              layouts: Sequence[str] = LAYOUTS, variants: bool = True) -> List[AotCase]:
    """Every (op, bench shape, variant, dtype, layout) at ``size``; ``variants=False``: the bench's own
    arguments only."""
    out = []
    for op in ops or op_cases.OPS:
        for shape in op_cases.cases(op, size):
            for variant in (VARIANTS[op] if variants else VARIANTS[op][:1]):
                for dtype in dtypes:
                    for layout in layouts:
                        out.append(AotCase(op, shape, variant, dtype, layout))
    return out


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def run_case(case: AotCase, impl: str = "fused", arch: int = 90) -> Dict[str, Timeline]:
    """``{"forward": Timeline, "backward": Timeline}`` of ``case`` on the fake device of ``arch``:
    ``fused`` runs ``torch.ops.fastmtl.<op>``, ``eager`` the plain-PyTorch reference; the backward
    is ``torch.autograd.grad`` of the output with a random output gradient (the bench's passes)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    fn = op_bench.fused_fn(case.op) if impl == "fused" else op_bench.reference_fn(case.op)
    with fake_cuda(arch, channels_last_inputs=case.layout == "channels_last") as h:
        s = case.inputs()
        start = len(h.timeline.events)
        out = fn(*s.args)
        mid = len(h.timeline.events)
        grad_out = torch.randn(_first(out).shape, dtype=_first(out).dtype, device="cuda")
        grad_start = len(h.timeline.events)
        torch.autograd.grad(_first(out), s.leaves, grad_out, allow_unused=True)
        end = len(h.timeline.events)
    ev = h.timeline.events
    return {"forward": Timeline(ev[start:mid]), "backward": Timeline(ev[grad_start:end])}
