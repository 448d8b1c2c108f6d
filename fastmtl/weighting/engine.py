"""One training step's backward for a weighting method: task losses -> ``.grad`` everywhere.

:class:`WeightedBackward` turns the per-task losses of a multi-task model into the gradients
of all its parameters (and of the method's own parameters) for ``optimizer.step()``:

* loss methods: the weights come from the (global) loss values; one backward of
  ``sum_t w_t L_t`` (through DDP when the model is wrapped in it);
* gradient methods, ``grad_mode="params"``: one ``autograd.grad`` per task to the shared
  parameters (and the heads), giving ``G (T, D_shared)``; the combined gradient is written
  into the shared parameters' ``.grad``;
* gradient methods, ``grad_mode="rep"``: one ``autograd.grad`` per task to the shared
  representation (the encoder's features the heads read, ``R (T, D_rep)``), the method
  combines them, then ONE backward through the encoder with the combined gradient.

Heads (the task-specific parameters) get ``sum_t h_t grad L_t`` with ``h = method.head_weights(c)``.

DDP (``world_size > 1``): every rank must apply the same update. Loss methods: the loss values
are all-reduced (mean) before the weights are computed (the network's gradients are DDP's).
Gradient methods run without DDP's reducer: ``params`` all-reduces ``G`` (mean) before
combining; ``rep`` all-reduces the Gram matrix ``R R^T`` (sum / W^2: the global batch's Gram)
or, for GradDrop, its per-element sign statistics, then all-reduces the encoder's and the
heads' gradients (mean). With per-rank batch-mean losses this equals one process with the
global batch. Method state (histories, random generators) is identical on every rank.

AMP: the per-task gradients are of ``scale * L_t`` (the GradScaler's scale); they are unscaled
before the method sees them and the combined gradient is scaled back, so ``scaler.step`` unscales
and checks it as usual. A non-finite gradient (fp16 overflow) writes an inf into the shared
gradients, so the scaler skips the step and lowers the scale, and the method's state is left
untouched; without a scaler such a step is reported as non-finite (``None``).

Non-finite task weights or coefficients (from finite losses and gradients: a method's own
numerics) are reported as ``None`` before anything is written, with or without a scaler: they are
not an fp16 overflow the scaler could recover from. A non-finite gradient behind finite weights
(without a scaler) is caught by :func:`fastmtl.weighting.training.apply_update`.

Loss methods check on the device, without a host read (:meth:`WeightedBackward.losses_backward`
returns the flag with the weights), except that a method keeping state from the losses (one that
overrides ``observe``: DWA, RLW, FAMO) must not see non-finite ones, so for it the
losses are read on the host first. Gradient methods read their checks on the host.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

from .base import LossWeighting, Weighting


class Sync:
    """All-reduce helpers over the default process group; no-ops for one process."""

    def __init__(self, world_size: int = 1):
        self.world_size = world_size

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t)
        return t

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t)
            t /= self.world_size
        return t

    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Rank 0's values everywhere (what DDP does to parameters at start and, without SyncBatchNorm,
        to buffers every step), as DDP does it: per device and dtype one broadcast of the tensors
        flattened together, then one copy back into all of them (a lone tensor in place)."""
        if not self.active:
            return
        groups: Dict[Tuple[torch.device, torch.dtype], List[torch.Tensor]] = defaultdict(list)
        for t in tensors:
            groups[(t.device, t.dtype)].append(t.data)
        for group in groups.values():
            if len(group) == 1:
                dist.broadcast(group[0], 0)
                continue
            flattened = torch.cat([t.reshape(-1) for t in group])
            dist.broadcast(flattened, 0)
            parts = flattened.split([t.numel() for t in group])
            torch._foreach_copy_(group, [v.view(t.shape) for t, v in zip(group, parts)])


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).float() for t in tensors])


def write_grads(params: Sequence[nn.Parameter], vector: torch.Tensor) -> None:
    """Set ``p.grad`` of every parameter from one flat vector (in order)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = vector[offset:offset + n].view_as(p).to(p.dtype).clone()
        offset += n


def split_parameters(model: nn.Module):
    """``(shared, heads)``: the encoder's parameters and every other trainable parameter."""
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ValueError("gradient balancing needs a model with a shared .encoder (fastmtl.models.MultiTaskModel)")
    shared = [p for p in encoder.parameters() if p.requires_grad]
    ids = {id(p) for p in shared}
    heads = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return shared, heads


class WeightedBackward:
    """Gradients of one step for ``method`` (see the module docstring).

    Args:
        method: a :class:`~fastmtl.weighting.Weighting`.
        shared, heads: the shared (encoder) and task-specific parameters (:func:`split_parameters`).
        grad_mode: ``"params"`` or ``"rep"`` (gradient methods only).
        world_size: processes in the default process group (1: no communication).
    """

    def __init__(self, method: Weighting, shared: List[nn.Parameter], heads: List[nn.Parameter],
                 grad_mode: str = "params", world_size: int = 1):
        if grad_mode not in ("params", "rep"):
            raise ValueError(f"grad_mode must be params or rep, got {grad_mode!r}")
        self.method, self.shared, self.heads, self.grad_mode = method, shared, heads, grad_mode
        self.own = [p for p in method.parameters() if p.requires_grad]
        self.sync = Sync(world_size)

    def global_losses(self, losses: torch.Tensor) -> torch.Tensor:
        """The detached losses averaged over ranks (``(T,)`` float64)."""
        return self.sync.mean_(losses.detach().double().clone())

    def _own_grads(self, own_loss: Optional[torch.Tensor], scale: float) -> None:
        if own_loss is None or not self.own:
            return
        grads = torch.autograd.grad(own_loss, self.own, allow_unused=True)
        for p, g in zip(self.own, grads):
            p.grad = None if g is None else (g * scale).to(p.dtype)

    # -- loss methods --------------------------------------------------------------------------

    def losses_backward(self, losses: torch.Tensor, scaler) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``losses (T,)`` of this rank -> ``(weights (T,), bad)`` after one backward; ``bad`` (0-d
        bool on the device): non-finite losses or weights, the update is to be skipped. None (nothing
        done) for non-finite losses of a method that keeps state from them (a host read for it only)."""
        global_losses = self.global_losses(losses)
        finite = torch.isfinite(global_losses).all()
        if _observes_losses(self.method) and not bool(finite):
            return None
        weights, own = self.method.weights_and_own_grads(global_losses)
        bad = ~(finite & torch.isfinite(weights).all())
        total = (weights.to(losses) * losses).sum()
        scaler.scale(total).backward()
        scale = _scale_of(scaler)
        for p, g in zip(self.own, own):
            p.grad = (g * scale).to(p.dtype)
        return weights, bad

    # -- gradient methods ----------------------------------------------------------------------

    def _per_task(self, losses: torch.Tensor, inputs: List[torch.Tensor], scaler):
        """``(T, D_inputs)`` float32 gradients of ``scale * L_t`` w.r.t. ``inputs``, written row by
        row into one buffer, and the heads' gradients: ``(T, D_heads)`` when the method weights
        the heads by its coefficients, else their sum over tasks ``(1, D_heads)``."""
        t_count, n_in = losses.shape[0], len(inputs)
        scaled = scaler.scale(losses)
        rows = losses.new_empty((t_count, sum(x.numel() for x in inputs)), dtype=torch.float32)
        per_task_heads = self.method.head_weights_mode == "coefficients"
        head_rows = losses.new_zeros((t_count if per_task_heads else 1, sum(p.numel() for p in self.heads)),
                                     dtype=torch.float32)
        for t in range(t_count):
            grads = torch.autograd.grad(scaled[t], inputs + self.heads, retain_graph=t < t_count - 1,
                                        allow_unused=True, materialize_grads=True)
            _copy_into(rows[t], grads[:n_in])
            _copy_into(head_rows[t if per_task_heads else 0], grads[n_in:], add=not per_task_heads)
            del grads
        return rows, head_rows

    def _skip(self, scaler) -> bool:
        """A non-finite gradient: let an fp16 GradScaler skip the step (True), else report it."""
        if not scaler.is_enabled():
            return False
        for p in self.shared[:1]:
            p.grad = torch.full_like(p, float("inf"))
        return True

    def _finish_heads(self, head_grads: torch.Tensor, coefficients: torch.Tensor) -> None:
        if self.heads:
            if head_grads.shape[0] == 1:  # already the sum over tasks (weights 1)
                h = head_grads[0]
            else:
                h = self.method.head_weights(coefficients).to(head_grads) @ head_grads
            write_grads(self.heads, self.sync.mean_(h))

    def params_backward(self, losses: torch.Tensor, scaler):
        """Per-task gradients w.r.t. the shared parameters. Returns the coefficients, or None."""
        global_losses = self.global_losses(losses)
        if not bool(torch.isfinite(global_losses).all()):
            return None
        grads, head_grads = self._per_task(losses, self.shared, scaler)
        scale = _scale_of(scaler)
        grads = self.sync.mean_(grads).div_(scale)
        gram = gram_of(grads)  # its diagonal is non-finite iff some gradient is
        if not bool(torch.isfinite(gram.diagonal()).all()):
            return self.method.last_weights if self._skip(scaler) else None
        if self.method.gram_only:
            c = self.method.coefficients(gram, global_losses)
            if not _finite(c):
                return None
            self._own_grads(self.method.own_loss(gram, global_losses), scale)
            combined = c.to(grads) @ grads
            self.method.last_weights = c.detach().float().cpu()
        else:
            combined, c = self.method.combine(grads, global_losses)
        write_grads(self.shared, combined * scale)
        self._finish_heads(head_grads, c.to(head_grads))
        return c

    def rep_backward(self, losses: torch.Tensor, features: List[torch.Tensor], leaves: List[torch.Tensor], scaler):
        """Per-task gradients w.r.t. the shared representation ``leaves`` (detached copies of
        ``features``, the encoder outputs the heads were run on), then one encoder backward."""
        global_losses = self.global_losses(losses)
        if not bool(torch.isfinite(global_losses).all()):
            return None
        rep, head_grads = self._per_task(losses, leaves, scaler)
        scale = _scale_of(scaler)
        rep = rep.div_(scale)
        sizes = [f.numel() for f in leaves]
        w = self.sync.world_size
        if self.method.gram_only:
            gram = self.sync.sum_(gram_of(rep)) / (w * w)
            if not bool(torch.isfinite(gram).all()):
                return self.method.last_weights if self._skip(scaler) else None
            c = self.method.coefficients(gram, global_losses)
            if not _finite(c):
                return None
            self._own_grads(self.method.own_loss(gram, global_losses), scale)
            self.method.last_weights = c.detach().float().cpu()
            combined = list((c.to(rep) @ rep).split(sizes))
        else:
            signed = []
            for r, leaf in zip(rep.split(sizes, dim=1), leaves):
                n = leaf.shape[0]
                signed.append((r.view(r.shape[0], n, -1) * leaf.detach().sign().float().view(1, n, -1)).sum(1))
            signed = self.sync.sum_(torch.cat(signed, 1)) / w
            if not bool(torch.isfinite(signed).all()):
                return self.method.last_weights if self._skip(scaler) else None
            mult = self.method.multipliers(signed)
            c = self.method.last_weights.clone()
            combined, offset = [], 0
            for r, leaf in zip(rep.split(sizes, dim=1), leaves):
                n, e = leaf.shape[0], leaf[0].numel()
                m = mult[:, offset:offset + e].view(mult.shape[0], 1, e)
                combined.append((m * r.view(r.shape[0], n, e)).sum(0).reshape(-1))
                offset += e
        torch.autograd.backward(features, [(g * scale).view_as(f).to(f.dtype) for g, f in zip(combined, features)])
        if self.sync.active:
            with_grad = [p for p in self.shared if p.grad is not None]
            write_grads(with_grad, self.sync.mean_(flat([p.grad for p in with_grad])))
        self._finish_heads(head_grads, c.to(head_grads))
        return c


def _observes_losses(method: Weighting) -> bool:
    """Whether a loss method keeps state from the losses (overrides ``observe``)."""
    return type(method).observe is not LossWeighting.observe


def _finite(weights: torch.Tensor) -> bool:
    """Whether the method's task weights / coefficients ``(T,)`` are all finite (a host read)."""
    return bool(torch.isfinite(weights).all())


def _copy_into(row: torch.Tensor, tensors: Sequence[torch.Tensor], add: bool = False) -> None:
    """Write (or add) the flattened ``tensors`` into the 1-D ``row``, converting the dtype."""
    offset = 0
    for x in tensors:
        n = x.numel()
        if add:
            row[offset:offset + n] += x.reshape(-1)
        else:
            row[offset:offset + n].copy_(x.reshape(-1))
        offset += n


def gram_of(grads: torch.Tensor) -> torch.Tensor:
    """``grads @ grads.T`` as float64 ``(T, T)``. The product is in the gradients' float32 (as
    LibMTL's): a float64 copy of ``(T, D)`` would cost more than the product. Its rounding can
    make it slightly indefinite, so the solvers clamp quadratic forms at 0."""
    return (grads @ grads.T).double()


def _scale_of(scaler) -> float:
    return float(scaler.get_scale()) if scaler.is_enabled() else 1.0


def representation(features: Dict[int, torch.Tensor]):
    """The shared representation of an encoder output ``{scale: tensor}``: every feature but
    the input (scale 1). Returns ``(keys, tensors, leaves, features_for_heads)`` where the heads
    run on detached leaves that require grad."""
    keys = [k for k in features if k != 1]
    tensors = [features[k] for k in keys]
    leaves = [t.detach().requires_grad_(True) for t in tensors]
    for_heads = dict(features)
    for_heads.update(zip(keys, leaves))
    return keys, tensors, leaves, for_heads
