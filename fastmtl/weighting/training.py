"""The trainer's side of task weighting: the method of a run, its optimizer group, one step, and
:func:`apply_update`, the optimizer step (skipped on the device on a non-finite loss, weight or
gradient) every train step shares.

:func:`fastmtl.step.build_step` calls :func:`method_for_run` (None for ``--weighting fixed``:
the step's own path, unchanged), puts :func:`param_groups` into its optimizer, and its
:class:`~fastmtl.step.TrainStep` delegates to :class:`WeightedTrainStep`. Gradient methods train the bare model (or its
``torch.compile``), never DDP's wrapper: :class:`~fastmtl.weighting.engine.WeightedBackward`
does the communication (parameters and buffers broadcast from rank 0 at start, and buffers
every step unless the BatchNorms are SyncBatchNorms, as the trainer's DDP does).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils import get_total_norm

from ..optim import step_unless
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


def apply_update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, scheduler,
                 bad: torch.Tensor) -> torch.Tensor:
    """The optimizer, scaler and scheduler step on the gradients a backward left in ``.grad``,
    without a host read. ``bad`` (0-d bool on the device): the loss or a task weight was
    non-finite. Returns the 0-d bool ``skipped``: ``bad`` or a non-finite gradient; then nothing is
    updated (the fused optimizer's ``found_inf``, :func:`fastmtl.optim.step_unless`). The
    scheduler steps either way (the trainer rewinds it by the skipped steps when it reads them,
    :meth:`fastmtl.step.TrainStep.settle`).

    An fp16 GradScaler checks the gradients itself: an overflowing step is skipped there and its
    scale lowered (not counted as skipped, the scaler's normal handling); a ``bad`` step is handed
    to it as an infinite gradient (so it lowers its scale too) and counted as skipped."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if scaler.is_enabled():
        if grads:
            grads[0].add_(torch.where(bad, math.inf, 0.0))
        scaler.step(optimizer)
        scaler.update()
    else:
        if grads:
            bad = bad | ~torch.isfinite(get_total_norm(grads, math.inf))
        step_unless(optimizer, bad)
    scheduler.step()
    return bad


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
        sync_buffers: broadcast rank 0's buffers before every step (gradient methods; off under
            SyncBatchNorm, whose global statistics keep the running statistics equal, as
            :func:`fastmtl.step.ddp_options` does for DDP). Parameters and buffers are broadcast
            once at construction either way.
    """

    def __init__(self, method: Weighting, model: nn.Module, forward: Callable, loss_fn: Callable, tasks: List[str],
                 grad_mode: str = "params", world_size: int = 1, compile: bool = False,
                 compile_backend: str = "inductor", sync_buffers: bool = True):
        self.method, self.model, self.forward, self.loss_fn, self.tasks = method, model, forward, loss_fn, tasks
        self.grad_mode = grad_mode if method.kind == "gradient" else "loss"
        shared, heads = split_parameters(model) if method.kind == "gradient" else ([], [])
        self.engine = WeightedBackward(method, shared, heads, grad_mode if method.kind == "gradient" else "params",
                                       world_size)
        self.sync = Sync(world_size if method.kind == "gradient" else 1)
        self.sync_buffers = sync_buffers
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

    def __call__(self, rgb: torch.Tensor, *args) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """``step(rgb, *targets, autocast, optimizer, scaler, scheduler)``: forward, weighted backward,
        optimizer/scaler/scheduler step. ``targets`` are what ``loss_fn`` takes after the outputs (the
        trainer passes one ``{task: target}`` dict). Returns the detached 0-d weighted loss, the
        ``{task: loss}`` tensors and the 0-d bool ``skipped`` (all on the device; read on the host by
        :func:`fastmtl.step.host_values`): a non-finite loss, task weight or gradient, nothing updated.
        Gradient methods' finiteness checks (:mod:`fastmtl.weighting.engine`) still read the host."""
        *targets, autocast, optimizer, scaler, scheduler = args
        optimizer.zero_grad(set_to_none=True)
        if self.sync_buffers:
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
        bad = torch.zeros((), dtype=torch.bool, device=losses.device)
        if self.grad_mode == "loss":
            result = self.engine.losses_backward(losses, scaler)
            if result is not None:
                bad = result[1]
        elif self.grad_mode == "params":
            result = self.engine.params_backward(losses, scaler)
        else:
            result = self.engine.rep_backward(losses, tensors, leaves, scaler)
        total = (self.method.last_weights.to(losses) * losses.detach()).sum()
        task_losses = {k: v.detach() for k, v in parts.items()}
        if result is None:  # the method found a non-finite loss, weight or gradient: nothing to update
            scheduler.step()  # as apply_update does: a skipped step is rewound when the trainer reads it
            return total, task_losses, torch.ones((), dtype=torch.bool, device=losses.device)
        return total, task_losses, apply_update(optimizer, scaler, scheduler, bad)
