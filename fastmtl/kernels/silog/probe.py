"""The self-check problem of ``silog_stats`` (:mod:`fastmtl.kernels.selfcheck`)."""
from __future__ import annotations

import torch

from ..selfcheck import Probe, randn
from . import launch
from .reference import silog_stats_backward_reference, silog_stats_reference


def silog_stats_probe(device, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> Probe:
    """The self-check problem (:mod:`fastmtl.kernels.selfcheck`): log-depth ``pred`` in ``dtype`` with fp32
    metric targets (a fifth invalid, some outside the clamp) at an odd shape; the stats then
    d(pred). ``channels_last`` changes nothing: an (N, 1, H, W) tensor has one memory layout."""
    target = torch.rand((3, 1, 9, 13), generator=gen, device=device) * 79 + 1
    invalid = torch.rand(target.shape, generator=gen, device=device) < 0.2
    target = torch.where(invalid, torch.zeros_like(target), target)
    pred = (target.clamp_min(1).log() + randn(target.shape, gen, device, torch.float32, scale=0.3)).to(dtype)
    grad_stats = randn((3, 3), gen, device, torch.float32)
    options = (2.0, 60.0, 0.01, True)  # min_depth, max_depth, eps, log_input

    def run(forward, backward):
        def both(pred, target, grad_stats):
            return [forward(pred, target, *options), backward(grad_stats, pred, target, *options)]
        return both

    return Probe((pred, target, grad_stats), run(launch.silog_stats_triton, launch.silog_stats_backward_triton),
                 run(silog_stats_reference, silog_stats_backward_reference))
