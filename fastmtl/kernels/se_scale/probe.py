"""The self-check problem of ``se_scale`` (:mod:`fastmtl.kernels.selfcheck`)."""
from __future__ import annotations

import torch

from ..selfcheck import Probe, randn
from . import launch
from .reference import se_scale_backward_reference, se_scale_reference


def se_scale_probe(device, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> Probe:
    """The self-check problem (:mod:`fastmtl.kernels.selfcheck`): the residual tail at odd shapes, fp32
    weights; forward output then all six gradients, launchers against references."""
    c, cr = 19, 5
    x, identity = (randn((2, c, 5, 7), gen, device, dtype, channels_last) for _ in range(2))
    w1, b1 = randn((cr, c, 1, 1), gen, device, torch.float32, scale=c ** -0.5), randn((cr,), gen, device, torch.float32)
    w2, b2 = randn((c, cr, 1, 1), gen, device, torch.float32, scale=cr ** -0.5), randn((c,), gen, device, torch.float32)
    dy = randn((2, c, 5, 7), gen, device, dtype, channels_last)

    def run(forward, backward):
        def both(x, identity, dy, *weights):
            out = forward(x, *weights, identity)
            return [out, *backward(dy, x, out, *weights)]
        return both

    return Probe((x, identity, dy, w1, b1, w2, b2),
                 run(launch.se_scale_forward_triton, launch.se_scale_backward_triton),
                 run(se_scale_reference, se_scale_backward_reference))
