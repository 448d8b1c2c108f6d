"""The ``torch.library`` ops ``fastmtl::aspp_project`` and ``fastmtl::aspp_project_backward``:
input checks, dispatch (Triton launchers or references), fake kernels, autograd, FLOP formulas.

The launchers are looked up on :mod:`.launch` at every call, as the self-check probe does, so
that replacing one there (tests) reaches every caller.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from .._utils import FLOAT_DTYPES, compute_dtype
from ..dispatch import use_triton
from ..selfcheck import passes
from . import launch
from .launch import _new_like
from .reference import aspp_project_backward_reference, aspp_project_reference


def _check_forward(branches: Sequence[Tensor], weight: Tensor, bias: Tensor,
                   scale: Optional[Tensor], shift: Optional[Tensor]) -> None:
    if len(branches) == 0:
        raise ValueError("aspp_project needs at least one branch")
    b0 = branches[0]
    if b0.dim() != 4 or b0.dtype not in FLOAT_DTYPES:
        raise ValueError(f"branches must be 4-D (N, C, H, W) float tensors, got {tuple(b0.shape)} {b0.dtype}")
    for b in branches[1:]:
        if b.shape != b0.shape or b.dtype != b0.dtype or b.device != b0.device:
            raise ValueError("all branches must have the same shape, dtype and device")
    n, cb = b0.shape[0], b0.shape[1]
    if weight.dim() != 2 or weight.shape[1] != len(branches) * cb or weight.dtype != b0.dtype:
        raise ValueError(f"weight must be (Cout, {len(branches)}*{cb}) of dtype {b0.dtype}, "
                         f"got {tuple(weight.shape)} {weight.dtype}")
    cout = weight.shape[0]
    if any(t is not None and t.device != b0.device for t in (weight, bias, scale, shift)):
        raise ValueError("weight, bias, scale and shift must be on the branches' device")
    if tuple(bias.shape) != (n, cout):
        raise ValueError(f"bias must be (N, Cout) = ({n}, {cout}), got {tuple(bias.shape)}")
    if (scale is None) != (shift is None):
        raise ValueError("scale and shift go together")
    if scale is not None and (tuple(scale.shape) != (cout,) or tuple(shift.shape) != (cout,)):
        raise ValueError(f"scale and shift must be ({cout},)")


@torch.library.custom_op("fastmtl::aspp_project", mutates_args=())
def aspp_project(branches: List[Tensor], weight: Tensor, bias: Tensor, scale: Optional[Tensor] = None,
                 shift: Optional[Tensor] = None, relu: bool = False) -> Tensor:
    """ASPP projection GEMM with a per-sample bias and an optional BatchNorm(eval)+ReLU epilogue.

    Args:
        branches: ``K`` tensors ``(N, Cb, H, W)`` of one dtype (fp16/bf16/fp32/fp64), any strides.
        weight: ``(Cout, K*Cb)``, the branches' dtype, any strides (e.g. a column slice of the
            projection conv's weight).
        bias: ``(N, Cout)``, any float dtype: the pooled branch's contribution.
        scale, shift: ``(Cout,)`` or both None: ``y * scale + shift`` (folded eval BatchNorm).
        relu: apply ReLU last.

    Returns ``(N, Cout, H, W)`` in the branches' dtype; channels_last if ``branches[0]`` is.
    """
    _check_forward(branches, weight, bias, scale, shift)
    if not (use_triton(branches[0]) and passes("aspp_project", branches[0])):
        return aspp_project_reference(branches, weight, bias, scale, shift, relu)
    return launch.aspp_project_forward_triton(branches, weight, bias, scale, shift, relu)


@aspp_project.register_fake
def _aspp_project_fake(branches, weight, bias, scale=None, shift=None, relu=False):
    _check_forward(branches, weight, bias, scale, shift)
    return _new_like(branches[0], weight.shape[0], branches[0].dtype)


@torch.library.custom_op("fastmtl::aspp_project_backward", mutates_args=())
def aspp_project_backward(grad: Tensor, out: Tensor, branches: List[Tensor], weight: Tensor, bias: Tensor,
                          scale: Optional[Tensor], preact: Optional[Tensor],
                          relu: bool) -> Tuple[List[Tensor], Tensor, Tensor, Tensor]:
    """Backward of :func:`aspp_project`.

    Args:
        grad, out: ``(N, Cout, H, W)``: the output gradient and the forward output (its sign
            is the ReLU mask), any strides.
        branches, weight, bias, scale, relu: as given to the forward (``bias`` gives the dtype
            of its gradient; its values are not read).
        preact: ``(N, Cout, H, W)`` pre-epilogue ``y`` (the forward recomputed without
            scale/shift/relu) when the scale gradient is wanted, else None.

    With ``gz = grad * (out > 0 if relu else 1)``, returns ``(grad_branches, grad_weight,
    grad_bias, grad_affine)``: ``K`` tensors ``(N, Cb, H, W)`` (layout as the forward output),
    ``(Cout, K*Cb)`` contiguous in weight's dtype, ``grad_bias = sum_hw gz * scale`` ``(N, Cout)``
    in bias's dtype, and ``grad_affine`` ``(S, Cout)`` in fp32 (fp64 for fp64):
    ``grad_affine[0] = sum_{n,hw} gz`` (the shift gradient) and, when ``preact`` is given,
    ``grad_affine[1] = sum_{n,hw} gz * preact`` (the scale gradient).
    """
    if not (use_triton(branches[0]) and passes("aspp_project", branches[0])):
        return aspp_project_backward_reference(grad, out, branches, weight, bias, scale, preact, relu)
    return launch.aspp_project_backward_triton(grad, out, branches, weight, bias, scale, preact, relu)


@aspp_project_backward.register_fake
def _aspp_project_backward_fake(grad, out, branches, weight, bias, scale, preact, relu):
    b0 = branches[0]
    n, cb = b0.shape[0], b0.shape[1]
    cout = weight.shape[0]
    grad_branches = [_new_like(b0, cb, b0.dtype) for _ in branches]
    grad_weight = torch.empty((cout, weight.shape[1]), dtype=weight.dtype, device=weight.device)
    grad_bias = torch.empty((n, cout), dtype=bias.dtype, device=bias.device)
    grad_affine = torch.empty((2 if preact is not None else 1, cout), dtype=compute_dtype(b0), device=b0.device)
    return grad_branches, grad_weight, grad_bias, grad_affine


def _setup_context(ctx, inputs, output):
    branches, weight, bias, scale, shift, relu = inputs
    ctx.relu = relu
    ctx.save_for_backward(*branches, weight, bias, scale, shift, output)


def _backward(ctx, grad):
    *branches, weight, bias, scale, shift, out = ctx.saved_tensors
    passed = len(ctx.needs_input_grad)  # the dispatcher drops trailing defaulted arguments
    _, _, need_bias, need_scale, need_shift, _ = (*ctx.needs_input_grad, *([False] * (6 - passed)))
    preact = None
    if scale is not None and need_scale:
        preact = aspp_project(branches, weight, bias)
    grad_branches, grad_weight, grad_bias, grad_affine = aspp_project_backward(
        grad, out, branches, weight, bias, scale, preact, ctx.relu)
    grad_scale = grad_affine[1].to(scale.dtype) if preact is not None else None
    grad_shift = grad_affine[0].to(shift.dtype) if shift is not None and need_shift else None
    return (grad_branches, grad_weight, grad_bias if need_bias else None, grad_scale, grad_shift, None)[:passed]


aspp_project.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.fastmtl.aspp_project)
def _aspp_project_flops(branches_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """One GEMM: ``2 * N*H*W * (K*Cb) * Cout``."""
    n, cout, h, w = out_shape
    return 2 * n * h * w * weight_shape[1] * cout


@register_flop_formula(torch.ops.fastmtl.aspp_project_backward)
def _aspp_project_backward_flops(grad_shape, out_arg_shape, branches_shape, weight_shape, *args,
                                 out_shape=None, **kwargs) -> int:
    """Two GEMMs (branch and weight gradients): ``4 * N*H*W * (K*Cb) * Cout``."""
    n, cout, h, w = grad_shape
    return 4 * n * h * w * weight_shape[1] * cout
