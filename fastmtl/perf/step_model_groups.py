"""Which part of the step an op belongs to (the step MODEL's groups): its kind (conv, norm,
activation, cast, upsample/concat, fused op) and the module that ran it, found through module
hooks in the forward and, in the backward, through the tensors it reads (a parameter's module,
else the module that produced the newest of its inputs)."""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Tuple

import torch
from torch import nn

GROUPS = ("backbone convs", "ASPP", "decoder convs", "attention", "norm", "activation", "casts",
          "upsample/concat", "losses", "optimizer", "other elementwise", "layout transposes")
"""The groups of the aten ops; each fused op is its own group, ``fused <op>``."""

CONV_OPS = {"convolution", "convolution_backward", "mm", "addmm", "bmm", "cudnn_convolution"}
NORM_OPS = {"native_batch_norm", "native_batch_norm_backward", "_native_batch_norm_legit",
            "_native_batch_norm_legit_functional", "_native_batch_norm_legit_no_training", "cudnn_batch_norm",
            "cudnn_batch_norm_backward", "batch_norm_backward"}
ACTIVATION_OPS = {"relu", "relu_", "threshold_backward", "sigmoid", "sigmoid_backward", "hardtanh", "gelu"}
CAST_OPS = {"_to_copy", "to_copy"}
RESAMPLE_OPS = {"upsample_bilinear2d", "upsample_bilinear2d_backward", "upsample_nearest2d",
                "upsample_nearest2d_backward", "cat", "slice_backward", "expand_backward"}
LOSS_TAG = "<loss>"


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


class GroupNamer:
    """``namer(func, tensors, phase)`` -> the group of one op of ``model``'s step; :meth:`hooks`
    installs what it needs (module hooks, the loss and optimizer phase switches)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.params: Dict[int, str] = {_storage(p): name.rsplit(".", 1)[0] for name, p in model.named_parameters()}
        self.made_by: Dict[int, Tuple[int, str]] = {}  # storage -> (sequence number, module path)
        self.stack: List[str] = []
        self.seq = 0

    def _path(self, tensors: List[torch.Tensor]) -> str:
        if self.stack:
            return self.stack[-1]
        for t in tensors:
            if _storage(t) in self.params:
                return self.params[_storage(t)]
        tagged = [self.made_by[_storage(t)] for t in tensors if _storage(t) in self.made_by]
        return max(tagged)[1] if tagged else ""

    def __call__(self, func, tensors: List[torch.Tensor], phase: str) -> Tuple[str, str]:
        """``(group, module path)`` of an op reading ``tensors``."""
        base = func.__name__.split(".")[0]
        path = self._path(tensors)
        self.seq += 1
        return self._group(func, base, path, phase), path

    def alias(self, copy: torch.Tensor, param: torch.Tensor) -> None:
        """``copy`` (e.g. autocast's bf16 copy of a parameter) belongs to ``param``'s module."""
        if _storage(param) in self.params:
            self.params[_storage(copy)] = self.params[_storage(param)]

    def tag(self, outputs: List[torch.Tensor], path: str) -> None:
        for t in outputs:
            self.made_by[_storage(t)] = (self.seq, path)

    @staticmethod
    def _group(func, base: str, path: str, phase: str) -> str:
        if func.namespace == "fastmtl":
            return f"fused {base}"
        if phase == "optimizer":
            return "optimizer"
        if phase == "loss" or path == LOSS_TAG:
            return "losses"
        parts = path.split(".")
        if base in CONV_OPS:
            if "aspp" in parts:
                return "ASPP"
            if "attention" in parts:
                return "attention"
            return "backbone convs" if parts[0] == "encoder" else "decoder convs"
        for ops, group in ((NORM_OPS, "norm"), (ACTIVATION_OPS, "activation"), (CAST_OPS, "casts"),
                           (RESAMPLE_OPS, "upsample/concat")):
            if base in ops:
                return group
        if "aspp" in parts:
            return "ASPP"
        if "attention" in parts:
            return "attention"
        return "other elementwise"

    @contextlib.contextmanager
    def hooks(self, tracer, loss_fn: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
        """Module paths in the forward; ``tracer.phase`` switched to forward / loss / optimizer (the
        tracer itself sees the backward begin and end)."""
        names = {m: n for n, m in self.model.named_modules()}

        def enter(module, _args):
            tracer.phase = "forward"
            self.stack.append(names[module] or "model")

        def leave(module, _args, _out):
            self.stack.pop()

        def loss_enter(_m, _args):
            tracer.phase = "loss"
            self.stack.append(LOSS_TAG)

        def loss_leave(_m, _args, _out):
            self.stack.pop()

        def opt_enter(_opt, _args, _kwargs):
            tracer.phase = "optimizer"

        handles = [m.register_forward_pre_hook(enter) for m in names]
        handles += [m.register_forward_hook(leave) for m in names]
        handles += [loss_fn.register_forward_pre_hook(loss_enter), loss_fn.register_forward_hook(loss_leave),
                    optimizer.register_step_pre_hook(opt_enter)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
