"""The trainer's side of task weighting: the method of a run, its optimizer group, one step, and
:func:`apply_update`, the optimizer step (skipped on a non-finite gradient) every train step shares.

:func:`fastmtl.step.build_step` calls :func:`method_for_run` (None for ``--weighting fixed``:
the step's own path, unchanged), puts :func:`param_groups` into its optimizer, and its
:class:`~fastmtl.step.TrainStep` delegates to :class:`WeightedTrainStep`. Gradient methods train the bare model (or its
``torch.compile``), never DDP's wrapper: :class:`~fastmtl.weighting.engine.WeightedBackward`
does the communication (parameters and buffers broadcast from rank 0 at start and buffers
every step, as DDP does).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils import get_total_norm

from . import build
from .base import Weighting
from .engine import Sync, WeightedBackward, representation, split_parameters

SEEDED = ("rlw", "pcgrad", "gradvac", "graddrop")


def method_for_run(cfg, tasks: List[str], steps_per_epoch: int) -> Optional[Weighting]:
    """The run's method (``cfg.weighting`` with ``cfg.weighting_opts``), or None for ``fixed``.
    DWA's period defaults to an epoch; the random methods' seed to the run's ``--seed``."""
    if cfg.weighting == "fixed":
        return None
    options = dict(cfg.weighting_opts)
    if cfg.weighting == "dwa" and not options.get("period"):
        options["period"] = steps_per_epoch
    if cfg.weighting in SEEDED:
        options.setdefault("seed", cfg.seed)
    return build(cfg.weighting, len(tasks), **options)


def param_groups(model: nn.Module, method: Optional[Weighting]):
    """The optimizer's parameter groups: the model's, plus the method's own (UW's log-variances,
    IMTL-L's scales, GradNorm's logits) without weight decay."""
    groups = [{"params": list(model.parameters())}]
    own = [p for p in method.parameters() if p.requires_grad] if method is not None else []
    if own:
        groups.append({"params": own, "weight_decay": 0.0})
    return groups


def allow_repeated_backward() -> None:
    """Per-task gradients backpropagate T times through one compiled graph (``retain_graph``);
    AOTAutograd's donated buffers forbid that, so they are turned off (a memory optimisation
    of the compiled backward only)."""
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False


def apply_update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, scheduler) -> bool:
    """The optimizer, scaler and scheduler step on the gradients a backward left in ``.grad``.

    Without an enabled GradScaler a non-finite gradient (behind a finite loss) must not reach the
    parameters: nothing is updated, the gradients are cleared and False is returned (the step
    counts as skipped). An fp16 GradScaler checks the gradients itself: it skips the update and
    lowers its scale (True: that is the scaler's normal overflow handling)."""
    if not scaler.is_enabled():
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads and not bool(torch.isfinite(get_total_norm(grads, math.inf))):
            optimizer.zero_grad(set_to_none=True)
            return False
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return True


class WeightedTrainStep:
    """One optimizer step of a run under a weighting method.

    Args:
        method: the run's method (on the run's device).
        model: the bare :class:`~fastmtl.models.MultiTaskModel`.
        forward: what the trainer runs the model through (its DDP wrapper for loss methods,
            the model or its ``torch.compile`` for gradient methods).
        loss_fn: ``(outputs, *targets) -> (total, {task: loss})`` (the trainer's
            :class:`~fastmtl.losses.MultiTaskLoss`, maybe compiled, takes one ``{task: target}`` dict).
        tasks: task names in the order of the method's weights.
        grad_mode: ``params`` or ``rep`` (gradient methods).
        world_size: DDP processes.
        compile: ``torch.compile`` the encoder and the heads separately (``rep`` mode; the
            method always runs eagerly, outside the graphs).
    """

    def __init__(self, method: Weighting, model: nn.Module, forward: Callable, loss_fn: Callable, tasks: List[str],
                 grad_mode: str = "params", world_size: int = 1, compile: bool = False,
                 compile_backend: str = "inductor"):
        self.method, self.model, self.forward, self.loss_fn, self.tasks = method, model, forward, loss_fn, tasks
        self.grad_mode = grad_mode if method.kind == "gradient" else "loss"
        shared, heads = split_parameters(model) if method.kind == "gradient" else ([], [])
        self.engine = WeightedBackward(method, shared, heads, grad_mode if method.kind == "gradient" else "params",
                                       world_size)
        self.sync = Sync(world_size if method.kind == "gradient" else 1)
        self.sync.broadcast_(list(model.parameters()) + list(model.buffers()))
        if compile and method.kind == "gradient":
            allow_repeated_backward()
        if self.grad_mode == "rep":
            self.encoder = torch.compile(model.encoder, backend=compile_backend) if compile else model.encoder
            self.heads = (torch.compile(model.predict_from_features, backend=compile_backend) if compile
                          else model.predict_from_features)

    def weights(self) -> Dict[str, float]:
        """The last step's task weights by task name."""
        return {t: float(w) for t, w in zip(self.tasks, self.method.last_weights.tolist())}

    def __call__(self, rgb: torch.Tensor, *args) -> Optional[Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
        """``step(rgb, *targets, autocast, optimizer, scaler, scheduler)``: forward, weighted backward,
        optimizer/scaler/scheduler step. ``targets`` are what ``loss_fn`` takes after the outputs (the
        trainer passes one ``{task: target}`` dict). Returns the detached 0-d weighted loss and
        ``{task: loss}`` tensors (read on the host by :func:`fastmtl.step.host_values`), or None when
        the step was skipped: a non-finite loss, task weight or gradient (nothing updated)."""
        *targets, autocast, optimizer, scaler, scheduler = args
        optimizer.zero_grad(set_to_none=True)
        self.sync.broadcast_(list(self.model.buffers()))
        if self.grad_mode == "rep":
            self.model.check_input(rgb)
            with autocast():
                features = self.encoder(rgb)
            _, tensors, leaves, for_heads = representation(features)
            with autocast():
                out = self.heads(for_heads, rgb.shape[-2:])
        else:
            with autocast():
                out = self.forward(rgb)
        _, parts = self.loss_fn(out, *targets)
        losses = torch.stack([parts[t].float() for t in self.tasks])
        if self.grad_mode == "loss":
            result = self.engine.losses_backward(losses, scaler)
        elif self.grad_mode == "params":
            result = self.engine.params_backward(losses, scaler)
        else:
            result = self.engine.rep_backward(losses, tensors, leaves, scaler)
        if result is None or not apply_update(optimizer, scaler, scheduler):
            return None
        return (self.method.last_weights.to(losses) * losses.detach()).sum(), {k: v.detach() for k, v in parts.items()}
