"""THE train step (forward under autocast, loss, task weighting, backward with the GradScaler,
optimizer and scheduler step) and its construction from a Config (:func:`build_step`), used by
the trainer and by every performance tool (``bench --models``, ``profile --throughput``, the
weighting-overhead benchmark), so they all run and time the same step."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch._inductor.config as inductor_config
from torch import nn

from .config import Config, ConfigError
from .losses import MultiTaskLoss
from .models import build_model
from .nn import fuse
from .optim import make_optimizer, poly_schedule
from .runtime import Runtime
from .tasks import Task, build_tasks, outputs_desc
from .weighting import Weighting
from .weighting.training import WeightedTrainStep, apply_update, method_for_run, param_groups

@dataclass
class StepResult:
    """What one :meth:`TrainStep.run` leaves on the device (no host read made): the detached 0-d
    weighted ``loss``, the ``{task: loss}`` 0-d tensors and the 0-d bool ``skipped`` (a non-finite
    loss, task weight or gradient: nothing was updated)."""

    loss: torch.Tensor
    parts: Dict[str, torch.Tensor]
    skipped: torch.Tensor


def host_values(result: StepResult) -> Tuple[float, Dict[str, float]]:
    """The step's host reads (a device sync): ``(loss, {task: loss})`` as python floats, or
    ``(nan, {})`` for a skipped step."""
    if bool(result.skipped):
        return float("nan"), {}
    return result.loss.item(), {k: v.item() for k, v in result.parts.items()}


class SkipCounter:
    """The skipped steps, counted on the device (each :meth:`add` is host-read free) and read at
    logging intervals (:meth:`read`, one host sync). ``counts (3,)`` int64: skipped since the last
    read, the current run of consecutive skipped steps, the longest run that grew since the last
    read (a run that goes on across reads counts in full)."""

    def __init__(self, device: torch.device):
        self.counts = torch.zeros(3, dtype=torch.int64, device=device)

    def add(self, skipped: torch.Tensor) -> None:
        s = skipped.long()
        run = (self.counts[1] + 1) * s
        self.counts = torch.stack([self.counts[0] + s, run, torch.maximum(self.counts[2], run)])

    def read(self) -> Tuple[int, int]:
        """``(skipped since the last read, longest run of consecutive skipped steps)``; resets the first."""
        skipped, run, longest = self.counts.tolist()
        self.counts = torch.tensor([0, run, 0], dtype=torch.int64, device=self.counts.device)
        return skipped, longest


class TrainStep:
    """One optimizer step of a run, with no host read (capturable).

    ``step(rgb, targets)``: ``rgb (N, 3, H, W)`` float on the run's device (normalised images),
    ``targets {task: tensor}`` on the same device (``semseg (N, H, W)`` int64, ``depth (N, 1, H, W)``
    metres with NaN invalid, ``normals (N, 3, H, W)``). Runs the forward under the run's autocast,
    the loss, the task weighting (:class:`~fastmtl.weighting.training.WeightedTrainStep` for a
    ``--weighting`` method, fixed weights otherwise), the backward through the GradScaler, the
    optimizer and the scheduler step. A non-finite loss, task weight or gradient skips the update on
    the device (:func:`~fastmtl.weighting.training.apply_update`; with an fp16 GradScaler an
    overflowing gradient is the scaler's own skip). :meth:`run` returns the :class:`StepResult`
    tensors and counts skipped steps in :attr:`skips`; calling the step returns them read on the
    host (:func:`host_values`: ``(loss, {task: loss})``, ``(nan, {})`` for a skipped step).
    :meth:`settle` reads the skip counts at logging intervals.
    """

    def __init__(self, forward: Callable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, scheduler, rt: Runtime, channels_last: bool = False,
                 weighted: Optional[WeightedTrainStep] = None, fixed_weights: Optional[Dict[str, float]] = None):
        self.forward, self.loss_fn = forward, loss_fn
        self.optimizer, self.scaler, self.scheduler, self.rt = optimizer, scaler, scheduler, rt
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weighted = weighted
        self.fixed_weights = dict(fixed_weights or {})
        self.skips = SkipCounter(rt.device)

    def __call__(self, rgb: torch.Tensor, targets: Dict[str, torch.Tensor]) -> Tuple[float, Dict[str, float]]:
        return host_values(self.run(rgb, targets))

    def run(self, rgb: torch.Tensor, targets: Dict[str, torch.Tensor]) -> StepResult:
        """The step, without a host read (the fp16 GradScaler's and the gradient methods' own
        checks aside): the results stay on the device."""
        rgb = rgb.contiguous(memory_format=self.memory_format)
        if self.weighted is not None:
            result = StepResult(*self.weighted(rgb, targets, self.rt.autocast, self.optimizer, self.scaler,
                                               self.scheduler))
        else:
            with self.rt.autocast():
                out = self.forward(rgb)
            loss, parts = self.loss_fn(out, targets)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            skipped = apply_update(self.optimizer, self.scaler, self.scheduler, ~torch.isfinite(loss))
            result = StepResult(loss.detach(), {k: v.detach() for k, v in parts.items()}, skipped)
        self.skips.add(result.skipped)
        return result

    def settle(self) -> Tuple[int, int]:
        """Read the skip counts (one host sync, at logging intervals): ``(steps skipped since the
        last settle, longest run of consecutive skipped steps)``. The LR schedule stepped on every
        step; it is rewound by the skipped ones, so it counts the steps that updated (between two
        reads a skipped step moves the LR on by one step early)."""
        skipped, longest = self.skips.read()
        if skipped:
            self.scheduler.last_epoch -= skipped + 1
            self.scheduler.step()  # recomputes the groups' lr at the rewound step
        return skipped, longest

    def weights(self) -> Dict[str, float]:
        """The task weights of the last step (a method's) or the fixed ones, by task name."""
        return self.weighted.weights() if self.weighted is not None else dict(self.fixed_weights)


@dataclass
class StepParts:
    """Everything a run's train step is made of, built by :func:`build_step`.

    ``model`` is the bare :class:`~fastmtl.models.MultiTaskModel` (state dicts, evaluation);
    ``forward`` what the step runs it through (DDP and/or ``torch.compile``); ``weighting`` the
    ``--weighting`` method (None: fixed weights); ``step`` the :class:`TrainStep`.
    """

    model: nn.Module
    forward: Callable
    tasks: List[Task]
    loss_fn: MultiTaskLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    weighting: Optional[Weighting]
    step: TrainStep

    @property
    def outputs_desc(self) -> Dict[str, int]:
        return outputs_desc(self.tasks)


def build_train_model(cfg: Config, desc: Dict[str, int], sync_bn: bool) -> nn.Module:
    """The model of ``cfg`` (``desc``: ``{task: channels}``) on the CPU, fused per ``cfg.fused``;
    with ``sync_bn`` (DDP on CUDA) its BatchNorms become ``SyncBatchNorm`` first, so
    :func:`fastmtl.nn.fuse` leaves them unfused (cross-process statistics; a fused BatchNorm +
    ReLU would keep per-process ones)."""
    if not sync_bn:
        return build_model(cfg, desc, fused=cfg.fused)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(build_model(cfg, desc))
    if cfg.fused:
        fuse(model)
    return model


_DDP_ARGUMENTS = frozenset(inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters)


@dataclass(frozen=True)
class DDPOptions:
    """How ``fastmtl train`` builds its ``DistributedDataParallel`` (:func:`ddp_options`).

    Always ``gradient_as_bucket_view=True``: after DDP's reducer has copied a gradient into its
    bucket (dividing by the world size on the way) the parameter's ``.grad`` becomes a view of the
    bucket, so the all-reduced bucket is the gradient: no copy back per parameter. (The step's
    ``zero_grad(set_to_none=True)`` drops those views, so each backward's fresh gradient is still
    copied in; with ``set_to_none=False`` autograd would add into the views instead, plus one
    in-place division each.) ``sync_buffers``: broadcast rank 0's buffers before every forward
    (DDP's default); off under SyncBatchNorm, whose global batch statistics keep the running
    statistics equal on every rank. ``batched_grad_copy``: the per-parameter copies into a bucket
    deferred to one ``_foreach_copy_`` and one division per bucket, where this torch's DDP has the
    argument (2.13 does; 2.6 and 2.11 do not)."""

    sync_buffers: bool
    batched_grad_copy: bool

    def kwargs(self, device: torch.device) -> Dict[str, object]:
        """The ``DistributedDataParallel`` keyword arguments for a module on ``device``, in the
        spelling this torch takes (2.13 deprecates ``broadcast_buffers`` for ``forward_sync_buffers``,
        which still broadcasts the buffers once at construction)."""
        kwargs: Dict[str, object] = {"device_ids": [device.index] if device.type == "cuda" else None,
                                     "gradient_as_bucket_view": True}
        if self.batched_grad_copy:
            kwargs["batched_grad_copy"] = True
        if not self.sync_buffers:
            kwargs["forward_sync_buffers" if "forward_sync_buffers" in _DDP_ARGUMENTS else "broadcast_buffers"] = False
        return kwargs


def ddp_options(sync_bn: bool) -> DDPOptions:
    """The run's DDP options: ``sync_bn`` (the model's BatchNorms are SyncBatchNorms, as
    :func:`build_train_model` makes them on N > 1 CUDA GPUs) turns the per-forward buffer broadcast
    off; ``batched_grad_copy`` wherever this torch's DDP takes it."""
    return DDPOptions(sync_buffers=not sync_bn, batched_grad_copy="batched_grad_copy" in _DDP_ARGUMENTS)


def build_step(cfg: Config, info, rt: Runtime, total_steps: int, steps_per_epoch: int) -> StepParts:
    """The train step of ``cfg`` as ``fastmtl train`` builds it: the tasks of ``cfg.tasks``
    (:func:`fastmtl.tasks.build_tasks` with the dataset ``info``), the model
    (fused per ``cfg.fused``, SyncBatchNorm under DDP on CUDA, channels_last), the weighting method,
    the optimizer over both, the poly schedule over ``total_steps``, the GradScaler (fp16 only), the
    loss with ``cfg.task_weight``, and the DDP (:func:`ddp_options`) / ``torch.compile`` wrappers of
    ``cfg``. Seed the RNG before calling it (the model's initialisation draws from it)."""
    device = rt.device
    if cfg.cuda_graphs and device.type != "cuda":
        raise ConfigError(f"--cuda-graphs needs a CUDA device (this run is on {device.type}); drop the flag")
    tasks = build_tasks(cfg, info)
    sync_bn = rt.distributed and device.type == "cuda"
    model = build_train_model(cfg, outputs_desc(tasks), sync_bn).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weighting = method_for_run(cfg, list(cfg.tasks), steps_per_epoch)
    if weighting is not None:
        weighting.to(device)
    optimizer = make_optimizer(cfg, param_groups(model, weighting))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=rt.amp_dtype == torch.float16)
    loss_fn = MultiTaskLoss(tasks=tasks, weights={t: cfg.task_weight(t) for t in cfg.tasks})

    forward, step_loss = model, loss_fn
    # gradient methods synchronise per-task gradients themselves (fastmtl.weighting.engine)
    if rt.distributed and (weighting is None or weighting.kind == "loss"):
        forward = nn.parallel.DistributedDataParallel(forward, **ddp_options(sync_bn).kwargs(device))
    if cfg.compile or cfg.cuda_graphs:
        if cfg.fused:
            # Inductor (seen with torch 2.13 on CPU) reorders the backward of the fused attention's
            # conv + channel slices wrongly when optimising for peak memory: gradients come out wrong
            inductor_config.reorder_for_peak_memory = False
        mode = "reduce-overhead" if cfg.cuda_graphs else None  # CUDA graphs of forward and backward
        forward, step_loss = torch.compile(forward, mode=mode), torch.compile(loss_fn, mode=mode)
    weighted = None if weighting is None else WeightedTrainStep(
        weighting, model, forward, step_loss, list(cfg.tasks), cfg.weighting_grads, rt.world_size,
        cfg.compile or cfg.cuda_graphs, sync_buffers=ddp_options(sync_bn).sync_buffers)
    step = TrainStep(forward, step_loss, optimizer, scaler, scheduler, rt, cfg.channels_last, weighted,
                     fixed_weights=loss_fn.weights)
    return StepParts(model, forward, tasks, loss_fn, optimizer, scheduler, scaler, weighting, step)
