"""The self-check problem of ``aspp_project`` (:mod:`fastmtl.kernels.selfcheck`)."""
from __future__ import annotations

import torch

from ..selfcheck import Probe, randn
from . import launch
from .launch import _precision
from .reference import aspp_project_backward_reference, aspp_project_reference


def aspp_project_probe(device, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> Probe:
    """The self-check problem (:mod:`fastmtl.kernels.selfcheck`): four branches at odd sizes with the folded
    BatchNorm + ReLU epilogue and the scale gradient's ``preact``; the output then the branch
    weight, bias, shift and scale gradients."""
    k, cb, cout, shape = 4, 19, 21, (2, 19, 5, 7)
    branches = [randn(shape, gen, device, dtype, channels_last) for _ in range(k)]
    weight = randn((cout, k * cb), gen, device, dtype, scale=(k * cb) ** -0.5)
    bias = randn((2, cout), gen, device, dtype, scale=0.1)
    scale = torch.rand((cout,), generator=gen, device=device) + 0.5
    shift = randn((cout,), gen, device, torch.float32, scale=0.1)
    grad = randn((2, cout, 5, 7), gen, device, dtype, channels_last)

    def run(forward, backward):
        def both(branches, weight, bias, scale, shift, grad):
            out = forward(branches, weight, bias, scale, shift, True)
            preact = forward(branches, weight, bias)
            grad_branches, grad_weight, grad_bias, grad_affine = backward(
                grad, out, branches, weight, bias, scale, preact, True)
            return [out, *grad_branches, grad_weight, grad_bias, grad_affine]
        return both

    # fp32 GEMMs run in TF32 here, and cuDNN may pick an exact fp32 algorithm for the reference
    tf32 = {torch.float32: 8 * 2.0 ** -10} if _precision(torch.float32) == "tf32" else {}
    return Probe((branches, weight, bias, scale, shift, grad),
                 run(launch.aspp_project_forward_triton, launch.aspp_project_backward_triton),
                 run(aspp_project_reference, aspp_project_backward_reference), tf32)
