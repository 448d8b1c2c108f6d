"""Scale-invariant log error (SI-logRMSE metric, Eigen et al. loss): per-image sums in one pass.

Per image ``n``, over its valid pixels (``target`` finite and ``> 0``)::

    p = clamp(pred, lo, hi)       lo = max(min_depth, eps), hi = max(max_depth, lo)
    d = log(max(target, eps)) - log(p)          (log_input: d = log(max(target, eps)) - clamp(pred, log lo, log hi))
    stats[n] = (sum d, sum d^2, count)

That clamp is ``max(clamp(pred, min_depth, max_depth), eps)`` written as one clamp (the two
agree everywhere; their gradients differ only on the boundary points, where this one passes
the gradient like ``torch.clamp`` does). ``target`` is always in metres; ``pred`` is metres,
or log-metres with ``log_input=True``.

From the sums: ``mean(d^2) - lam * mean(d)^2`` (``lam=1``: the SI variance). The metric is
``100 * sqrt(max(that, 0))`` per image, averaged over images with at least one valid pixel
(:func:`silog`). For training use :func:`silog_from_stats` with ``sqrt_eps > 0`` (the gradient
of ``sqrt`` at 0 is infinite; ``sqrt_eps=1e-8`` biases the value by at most 1e-4) or
``root=False`` (the un-rooted variance, smooth everywhere). Gradients flow to ``pred`` only.

Shapes and layouts: ``pred``, ``target`` ``(N, 1, H, W)`` or ``(N, H, W)``, same shape, any
strides whose H and W merge (else copied); dtypes fp16/bf16/fp32/fp64, may differ between the
two (e.g. bf16 predictions, fp32 targets). Sums are fp32 (fp64 if either input is fp64),
reduced in fixed-order chunks (deterministic, no atomics). The clamp bounds and ``eps`` reach
the Triton kernels as fp32 scalars.

Ops (namespace ``fastmtl``): ``silog_stats(pred, target, min_depth, max_depth, eps, log_input)
-> stats (N, 3)`` and ``silog_stats_backward`` (its gradient wrt ``pred``), with fake kernels
and an autograd formula.

Modules: :mod:`.reference` (the plain-PyTorch references and the clamp bounds),
:mod:`.kernels` (the ``@triton.jit`` kernels), :mod:`.launch` (their launchers: blocks,
chunks, grids), :mod:`.op` (the ``torch.library`` ops: checks, fake kernels, autograd; and
:func:`silog_from_stats` / :func:`silog`, the values from the sums), :mod:`.probe` (the
self-check problem of :mod:`fastmtl.kernels.selfcheck`).
"""
from .launch import silog_stats_backward_triton, silog_stats_triton
from .op import silog, silog_from_stats, silog_stats, silog_stats_backward
from .probe import silog_stats_probe
from .reference import silog_stats_backward_reference, silog_stats_reference

__all__ = [
    "silog", "silog_from_stats", "silog_stats", "silog_stats_backward", "silog_stats_backward_reference",
    "silog_stats_backward_triton", "silog_stats_probe", "silog_stats_reference", "silog_stats_triton",
]
