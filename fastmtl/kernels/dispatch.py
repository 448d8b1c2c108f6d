"""Choosing between the Triton kernels and the plain-PyTorch references.

``FASTMTL_KERNELS`` is read at every call (so tests and users can switch it at run time):

* ``auto`` (default): Triton for CUDA tensors when triton imports, the reference otherwise.
* ``triton``: always the Triton kernels; CPU tensors run them through the Triton
  interpreter, which needs ``TRITON_INTERPRET=1`` set before triton is imported.
* ``reference``: always the plain-PyTorch reference.
"""
from __future__ import annotations

import importlib
import os

import torch

MODES = ("auto", "triton", "reference")

try:  # triton is optional: absent on macOS / Windows, or a broken install
    importlib.import_module("triton.language")  # imports triton too

    HAS_TRITON = True
except Exception:  # pragma: no cover - depends on the platform
    HAS_TRITON = False


def interpreter_enabled() -> bool:
    """True when the Triton interpreter (CPU execution of kernels) is switched on."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernel_mode() -> str:
    """The validated value of ``FASTMTL_KERNELS``."""
    mode = os.environ.get("FASTMTL_KERNELS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"FASTMTL_KERNELS must be one of {MODES}, got {mode!r}")
    return mode


def use_triton(x: torch.Tensor) -> bool:
    """Whether an op called on tensor ``x`` should run its Triton kernels.

    Raises a clear error when ``FASTMTL_KERNELS=triton`` cannot be honoured.
    """
    mode = kernel_mode()
    if mode == "reference":
        return False
    if mode == "auto":
        return HAS_TRITON and x.is_cuda
    if not HAS_TRITON:
        raise RuntimeError("FASTMTL_KERNELS=triton but triton is not importable; pip install triton")
    if x.device.type == "cpu" and not interpreter_enabled():
        raise RuntimeError(
            "FASTMTL_KERNELS=triton on CPU tensors needs the Triton interpreter: "
            "set TRITON_INTERPRET=1 before importing fastmtl / triton"
        )
    if x.device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"fastmtl's Triton kernels run on cuda (or cpu via the interpreter), not {x.device.type}")
    return True


def kernels_available(device: torch.device | str) -> bool:
    """Whether the Triton kernels would run for tensors on ``device`` under ``auto``."""
    return HAS_TRITON and torch.device(device).type == "cuda"
