"""The op-benchmark case table: ops, passes and implementations, the benchmarked shapes and their
random inputs (:func:`cases`, :func:`make_inputs`: NCHW, or channels_last where a case says so),
the fewest-bytes and FLOP formulas (:func:`bytes_moved`, :func:`flops`) and which implementations
run on a device (:func:`skip_reason`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from fastmtl.config import ConfigError
from fastmtl.kernels.dispatch import kernel_mode, kernels_available


OPS = ("se_scale", "sigmoid_gate", "aspp", "silog", "bn_relu")

MODES = ("forward", "backward", "full")

IMPLS = ("eager", "compile", "fused", "fused_compile")
# whole-model steps also run under CUDA graphs (torch.compile mode="reduce-overhead"; fastmtl train --cuda-graphs)
MODEL_IMPLS = IMPLS + ("compile_graphs", "fused_compile_graphs")

SIZES = ("tiny", "small", "full")  # tiny: a few programs per launch (CPU interpreter, tests)

LAYOUTS = ("nchw", "channels_last")  # the memory format of a case's activations (Case.layout)


BYTE_FORMULAS = {
    "se_scale": "fwd 3*E*s + Wt, bwd 5*E*s + 2*Wt  (E = N*C*H*W, Wt = fp32 fc weights + biases)",
    "sigmoid_gate": "fwd 4*E*s, bwd 5*E*s  (E = N*C*H*W)",
    "aspp": "fwd (Ein + Eout + Wt)*s, bwd 2*(Ein + Eout + Wt)*s  (+ bias, scale, shift)",
    "silog": "fwd E*(sp + st), bwd E*(2*sp + st)  (E = N*H*W, fp32 target)",
    "bn_relu": "fwd 2*E*s + 8*C*sp, bwd 3*E*s + 6*C*sp  (E = N*C*H*W; fp32 weight, bias, running stats, mean, invstd)",
}

OP_DESCRIPTIONS = {
    "se_scale": "relu(x * SE-gate(x) + identity), the ResNet block tail",
    "sigmoid_gate": "r + f * sigmoid(a), f and a the halves of one conv output",
    "aspp": "ASPP projection: relu(BN(W @ concat(4 branches) + pooled bias)), frozen BN",
    "silog": "per-image SI-log sums (sum d, sum d^2, count), log-depth input",
    "bn_relu": "relu(BatchNorm2d(x)) in training: batch statistics, running statistics updated",
}



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



def bn_relu_bytes(n: int, c: int, h: int, w: int, act_bytes: int, param_bytes: int,
                  running: bool = True) -> Dict[str, int]:
    """Fewest bytes of training-mode ``bn_relu`` (``relu(BatchNorm2d(x))``, batch statistics).

    ``E = N*C*H*W`` activations of ``act_bytes``; the per-channel ``(C,)`` tensors (weight, bias,
    running statistics, the saved mean and invstd) of ``param_bytes`` each:

    * forward:  read x, weight, bias (+ running mean, var), write out, mean, invstd
      (+ the running statistics)                          -> 2 * E * s + (4 + 4*running) * C * sp
    * backward: read grad, x, weight, bias (the ReLU mask is recomputed from x), mean, invstd,
      write dx, dweight, dbias                            -> 3 * E * s + 6 * C * sp
    * full: forward + backward.
    """
    e = n * c * h * w
    fwd = 2 * e * act_bytes + (4 + 4 * running) * c * param_bytes
    bwd = 3 * e * act_bytes + 6 * c * param_bytes
    return {"forward": fwd, "backward": bwd, "full": fwd + bwd}



@dataclass(frozen=True)
class Case:
    """One benchmarked shape of one op. ``dims`` holds the op's sizes (n, c, h, w, ...);
    ``layout`` (:data:`LAYOUTS`) the memory format of its 4-d activations."""

    op: str
    name: str
    dims: Tuple[Tuple[str, int], ...]
    note: str = ""
    layout: str = "nchw"

    def __getitem__(self, key: str) -> int:
        return dict(self.dims)[key]

    def __str__(self) -> str:
        return self.name



def _case(op: str, name: str, note: str = "", layout: str = "nchw", **dims: int) -> Case:
    return Case(op, name, tuple(dims.items()), note, layout)



def cases(op: str, size: str) -> List[Case]:
    """The benchmarked shapes of ``op`` at ``size`` (``tiny``, ``small`` or ``full``)."""
    if op not in OPS:
        raise ConfigError(f"unknown op {op!r}; valid ops: {', '.join(OPS)}")
    if size not in SIZES:
        raise ConfigError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    if size == "tiny":
        return {
            "se_scale": [_case(op, "tiny 2x16x4x8", n=2, c=16, h=4, w=8)],
            "sigmoid_gate": [_case(op, "tiny 2x8x4x8", n=2, c=8, h=4, w=8)],
            "aspp": [_case(op, "tiny 2x4x8->8 4x4", n=2, k=4, cb=8, cout=8, h=4, w=4)],
            "silog": [_case(op, "tiny 2x8x16", n=2, h=8, w=16)],
            "bn_relu": [_case(op, "tiny 2x8x4x8", layout="channels_last", n=2, c=8, h=4, w=8)],
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
    if op == "bn_relu":
        # the default model's 41 BatchNorm + ReLU pairs, channels_last (as its step MODEL): the most
        # frequent pair and the largest one, together 62 % of the pairs' elements
        return [
            _case(op, f"1/8 {n}x256x{h8}x{w8}", "18 of 41 pairs: layer3 bn1, ASPP branches and projection, "
                  "decoder 1/8 fusion", "channels_last", n=n, c=256, h=h8, w=w8),
            _case(op, f"1/2 {n}x256x{2 * h4}x{2 * w4}", "2 of 41 pairs, the largest: decoder 1/2 fusion",
                  "channels_last", n=n, c=256, h=2 * h4, w=2 * w4),
        ]
    return [_case(op, f"{n}x{4 * h4}x{4 * w4}", n=n, h=4 * h4, w=4 * w4)]



@dataclass
class InputSet:
    """One set of inputs: ``args`` for the op / reference, ``leaves`` whose gradients the
    backward computes."""

    args: tuple
    leaves: List[torch.Tensor]
    out: Optional[object] = None
    grad_out: Optional[torch.Tensor] = None



def randn(shape, gen, device, dtype, scale=1.0, grad=False, memory_format=torch.contiguous_format) -> torch.Tensor:
    t = (torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * scale).to(dtype)
    return t.contiguous(memory_format=memory_format).requires_grad_(grad)



def make_inputs(case: Case, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> InputSet:
    """Fresh random inputs for ``case`` (never zeros), as the fused modules pass them; the 4-d
    activations in ``case.layout``."""
    op = case.op
    if case.layout not in LAYOUTS:
        raise ValueError(f"case {case.name!r}: layout must be one of {LAYOUTS}, got {case.layout!r}")
    mf = torch.channels_last if case.layout == "channels_last" else torch.contiguous_format
    if op == "se_scale":  # the ResNet block tail: relu(se(x) + identity); fp32 weights (autocast keeps them)
        n, c, h, w = case["n"], case["c"], case["h"], case["w"]
        cr = max(1, c // 16)
        x = randn((n, c, h, w), gen, device, dtype, grad=True, memory_format=mf)
        identity = randn((n, c, h, w), gen, device, dtype, grad=True, memory_format=mf)
        w1 = randn((cr, c, 1, 1), gen, device, torch.float32, c ** -0.5, True)
        b1 = randn((cr,), gen, device, torch.float32, 0.1, True)
        w2 = randn((c, cr, 1, 1), gen, device, torch.float32, cr ** -0.5, True)
        b2 = randn((c,), gen, device, torch.float32, 0.1, True)
        return InputSet((x, w1, b1, w2, b2, identity), [x, w1, b1, w2, b2, identity])
    if op == "sigmoid_gate":  # f and a: the two channel halves of one 2C-channel conv output, + residual
        n, c, h, w = case["n"], case["c"], case["h"], case["w"]
        y = randn((n, 2 * c, h, w), gen, device, dtype, grad=True, memory_format=mf)
        f, a = y[:, :c], y[:, c:]
        r = randn((n, c, h, w), gen, device, dtype, grad=True, memory_format=mf)
        return InputSet((f, a, r), [f, a, r])
    if op == "aspp":  # four branch outputs; eval-mode BatchNorm folded into scale/shift (frozen) + ReLU
        n, k, cb, cout, h, w = (case[d] for d in ("n", "k", "cb", "cout", "h", "w"))
        branches = [randn((n, cb, h, w), gen, device, dtype, grad=True, memory_format=mf) for _ in range(k)]
        weight = randn((cout, k * cb), gen, device, dtype, (k * cb) ** -0.5, True)
        bias = randn((n, cout), gen, device, dtype, 0.1, True)
        scale = (torch.rand((cout,), generator=gen, device=device) + 0.5)
        shift = randn((cout,), gen, device, torch.float32, 0.1)
        return InputSet((branches, weight, bias, scale, shift, True), [*branches, weight, bias])
    if op == "bn_relu":  # a bf16 conv output; fp32 weight, bias and running statistics (autocast keeps them)
        n, c, h, w = case["n"], case["c"], case["h"], case["w"]
        x = randn((n, c, h, w), gen, device, dtype, grad=True, memory_format=mf)
        weight = (1 + randn((c,), gen, device, torch.float32, 0.1)).requires_grad_()
        bias = randn((c,), gen, device, torch.float32, 0.1, True)
        running_mean = randn((c,), gen, device, torch.float32, 0.1)
        running_var = 1 + torch.rand((c,), generator=gen, device=device)
        return InputSet((x, weight, bias, running_mean, running_var, 0.1, 1e-5), [x, weight, bias])
    # silog: log-depth predictions in the activation dtype, fp32 metric targets with invalid pixels
    n, h, w = case["n"], case["h"], case["w"]
    target = torch.rand((n, 1, h, w), generator=gen, device=device) * 79 + 1
    invalid = torch.rand((n, 1, h, w), generator=gen, device=device) < 0.1
    target = torch.where(invalid, torch.zeros_like(target), target).contiguous(memory_format=mf)
    pred = (target.clamp_min(1).log() + 0.1 * torch.randn((n, 1, h, w), generator=gen, device=device))
    pred = pred.to(dtype).contiguous(memory_format=mf).requires_grad_()
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
    if case.op == "bn_relu":
        return case["n"] * case["c"] * case["h"] * case["w"] * s
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
    if case.op == "bn_relu":
        return bn_relu_bytes(d["n"], d["c"], d["h"], d["w"], s, 4)
    return silog_bytes(d["n"], d["h"], d["w"], s, 4)



def flops(case: Case) -> Optional[Dict[str, int]]:
    """GEMM FLOPs per pass for ``aspp``; None for the memory-bound ops."""
    if case.op != "aspp":
        return None
    return aspp_flops(*(case[k] for k in ("n", "k", "cb", "cout", "h", "w")))



def default_impls(device: torch.device) -> Tuple[str, ...]:
    """All four on CUDA; only ``eager`` on CPU."""
    return IMPLS if device.type == "cuda" else ("eager",)



def skip_reason(impl: str, device: torch.device, allow_cpu_compile: bool = False) -> Optional[str]:
    """Why ``impl`` is not timed on ``device`` (None: it is)."""
    if impl in ("compile_graphs", "fused_compile_graphs") and device.type != "cuda":
        return "CUDA graphs need a CUDA device (torch.compile mode='reduce-overhead', --cuda-graphs)"
    if impl in ("fused", "fused_compile", "fused_compile_graphs"):
        if not kernels_available(device):
            return ("Triton kernels run on CUDA only: on CPU the fused op runs the Triton interpreter (or the "
                    "reference), whose timing is meaningless")
        if kernel_mode() == "reference":
            return "FASTMTL_KERNELS=reference: the fused op would run the reference"
    if impl in ("compile", "fused_compile") and device.type == "cpu" and not allow_cpu_compile:
        return "torch.compile skipped on CPU: inductor compiles each shape for seconds here (ask for it explicitly)"
    return None



def parse_list(text: Optional[str], valid: Sequence[str], what: str) -> List[str]:
    """``"a,b"`` -> ``["a", "b"]``, checked against ``valid`` (ConfigError names the bad value)."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what} needs at least one of {', '.join(valid)}")
    for t in items:
        if t not in valid:
            raise ConfigError(f"--{what}: unknown value {t!r}; valid: {', '.join(valid)}")
    return items
