"""fastmtl's Triton kernels (installed as ``fastmtl.kernels``).

Importing the package registers every op in the ``torch.ops.fastmtl`` namespace:

* ``se_scale``: squeeze-and-excitation, ``x * gate(W2 act(W1 mean_hw(x) + b1) + b2)``
  (``act``: relu/silu/gelu/hardswish, ``gate``: sigmoid/hardsigmoid, biases optional), optionally ``relu(that + identity)`` (the ResNet block tail); ``se_scale_backward``: its gradients.
* ``sigmoid_gate``: the attention gate ``f * sigmoid(a)``, optionally ``+ r``;
  ``sigmoid_gate_backward``: its gradients; ``sigmoid_gate_halves`` (and its backward): the same
  gate on the two channel halves of one tensor, with one gradient for that tensor;
* ``silog_stats``: per-image ``(sum d, sum d^2, count)`` of the log depth error
  ``d = log(target) - log(pred)`` over valid pixels (:func:`.silog.silog` /
  :func:`.silog.silog_from_stats` turn them into the SI-log metric / loss); ``silog_stats_backward``: its gradient wrt ``pred``.
* ``bn_relu``: training-mode ``relu(batch_norm(x))`` with batch statistics, updating the running
  statistics in place; ``bn_relu_backward``: its gradients (:func:`.bn_relu.batch_norm_relu` is
  the differentiable entry point: torch.library gives no autograd formula to an op that mutates).
* ``aspp_project``: the ASPP projection ``relu?((W @ concat(branches) + bias) * scale + shift)``
  without the concat; ``aspp_project_backward``: its gradients.

One package per op, exported here under its name (:mod:`.se_scale`, :mod:`.sigmoid_gate`,
:mod:`.silog`, :mod:`.aspp`, :mod:`.bn_relu`; the op functions keep to their packages, e.g.
``fastmtl.kernels.se_scale.se_scale``, since an op named like its package would hide it), each
with the same modules, one job each:

* ``reference.py``: the plain-PyTorch references (``*_reference``), the CPU path and the
  numerical reference of the kernels;
* ``kernels.py``: the ``@triton.jit`` kernels (defined only when triton imports);
* ``launch.py``: their launchers (``*_forward_triton`` / ``*_backward_triton``,
  ``silog_stats_triton``): tile sizes, grids, the buffers they write;
* ``op.py``: the ``torch.library`` registration (input checks, dispatch, fake kernels,
  autograd, FLOP formula where it counts) and the public functions;
* ``probe.py``: the op's self-check problem;
* ``__init__.py``: the op's documentation, re-exporting its public names.

:mod:`.dispatch` picks the implementation per call (``FASTMTL_KERNELS``) and is re-exported
here; :mod:`._utils` holds the helpers the ops share; :mod:`.selfcheck` checks each op's
kernels against its reference on their first call per (device, dtype, layout) and makes the
op fall back to the reference where they fail (``FASTMTL_SELFCHECK=0`` turns that off).
"""
from . import aspp, bn_relu, se_scale, sigmoid_gate, silog  # noqa: F401  (registers the ops)
from .dispatch import HAS_TRITON, kernel_mode, kernels_available, use_triton

__all__ = ["HAS_TRITON", "aspp", "bn_relu", "kernel_mode", "kernels_available", "se_scale", "sigmoid_gate", "silog", "use_triton"]
