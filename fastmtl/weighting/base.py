"""The interface every task-weighting method implements.

Two kinds (``Weighting.kind``):

* ``"loss"``: the method turns the task losses ``(T,)`` into one objective. ``objective(losses)``
  is differentiable in the losses and in the method's own parameters (UW's log-variances,
  IMTL-L's scales); the weights are its gradient ``d objective / d losses``, so the network's
  gradient is ``sum_t w_t * grad L_t``.
* ``"gradient"``: the method combines per-task gradients ``G (T, D)`` (w.r.t. the shared
  parameters or the shared representation) into one ``(D,)`` gradient. All of them except
  GradDrop need only the Gram matrix ``G G^T (T, T)``: ``coefficients(gram, losses)`` returns
  ``c (T,)`` and the combined gradient is ``c @ G``. That is what makes them exact under DDP
  (see :mod:`fastmtl.weighting.engine`): the Gram matrix of the global batch is an all-reduce
  of ``T x T`` numbers away.

Standalone use (no trainer)::

    method = fastmtl.weighting.build("pcgrad", num_tasks=2)
    result = method(losses, grads)      # losses (T,), grads (T, D)
    result.grad                         # (D,) combined gradient; result.weights (T,)
    result = uw(losses); result.loss.backward()   # a loss method: backward its objective

``state_dict()`` / ``load_state_dict()`` hold every piece of state (learned parameters, loss
history, previous weights, random generator), so a resumed run continues exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional

import torch
from torch import nn


@dataclass
class WeightingResult:
    """What a method returns for one step.

    weights: ``(T,)`` the task weights (loss methods: ``d objective / d L_t``; gradient methods:
        the coefficients ``c`` with ``grad = c @ G``; GradDrop: the mean kept fraction per task).
    grad: ``(D,)`` the combined gradient, when per-task gradients were given.
    loss: the differentiable objective (loss methods only; its gradient is the method's update).
    """

    weights: torch.Tensor
    grad: Optional[torch.Tensor] = None
    loss: Optional[torch.Tensor] = None


class Weighting(nn.Module):
    """Base class. Subclasses set ``name``, ``kind``, ``paper`` and ``defaults`` (the options and
    their paper defaults; an option's type is its default's type). A NaN or infinite option value
    is refused here, for every method (ValueError naming the option)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    defaults: ClassVar[Dict[str, Any]] = {}
    # gradient methods: the weights the task-specific (head) parameters get on their task
    # losses: "ones" (LibMTL's convention: each head gets its own task's plain gradient) or
    # "coefficients" (the method's c, as Nash-MTL's and GradNorm's papers weight the whole loss)
    head_weights_mode: ClassVar[str] = "ones"
    gram_only: ClassVar[bool] = True

    def __init__(self, num_tasks: int, **options: Any):
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"weighting {self.name}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")
        for key, value in options.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
                raise ValueError(f"weighting {self.name}: option {key} must be a finite number, got {value!r}")
        self.num_tasks = num_tasks
        self.options = {**self.defaults, **options}
        self.last_weights = torch.ones(num_tasks)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, " + ", ".join(f"{k}={v}" for k, v in self.options.items())

    def _check_losses(self, losses: torch.Tensor) -> None:
        if losses.shape != (self.num_tasks,):
            raise ValueError(f"weighting {self.name}: expected losses of shape ({self.num_tasks},), got {tuple(losses.shape)}")

    # plain Python state (counters, histories) travels as nn.Module "extra state"
    def _extra(self) -> Dict[str, Any]:
        return {}

    def _load_extra(self, state: Dict[str, Any]) -> None:
        pass

    def get_extra_state(self) -> Dict[str, Any]:
        return {"last_weights": self.last_weights.clone(), **self._extra()}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.last_weights = state["last_weights"].clone()
        self._load_extra(state)


class LossWeighting(Weighting):
    """A method that weights the losses. Subclasses implement ``objective`` and may override
    ``observe`` (called once per step with the detached losses, before ``objective``)."""

    kind = "loss"

    def observe(self, losses: torch.Tensor) -> None:
        """Update the state with this step's (detached, for DDP: global-mean) losses."""

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weights_and_own_grads(self, losses: torch.Tensor):
        """``(weights (T,), [grads of self.parameters()])`` at the detached ``losses``; calls
        ``observe`` first. Used by the trainer (the network part then goes through one backward)."""
        self._check_losses(losses)
        self.observe(losses.detach())
        with torch.enable_grad():
            at = losses.detach().float().clone().requires_grad_(True)
            params = [p for p in self.parameters() if p.requires_grad]
            grads = torch.autograd.grad(self.objective(at), [at, *params], allow_unused=True)
        weights = grads[0] if grads[0] is not None else torch.zeros_like(at)
        own = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads[1:], params)]
        self.last_weights = weights.detach().cpu()
        return weights.detach(), own

    def forward(self, losses: torch.Tensor, grads: Optional[torch.Tensor] = None) -> WeightingResult:
        """``losses (T,)`` (differentiable) -> objective, weights, and ``weights @ grads`` if given."""
        self._check_losses(losses)
        self.observe(losses.detach())
        loss = self.objective(losses)
        with torch.enable_grad():
            at = losses.detach().float().clone().requires_grad_(True)
            weights = torch.autograd.grad(self.objective(at), at)[0]
        self.last_weights = weights.detach().cpu()
        combined = None if grads is None else weights.to(grads.dtype) @ grads
        return WeightingResult(weights.detach(), combined, loss)


class GradientWeighting(Weighting):
    """A method that combines per-task gradients. Gram-based subclasses implement
    ``coefficients``; GradDrop (``gram_only = False``) overrides ``combine``."""

    kind = "gradient"

    def coefficients(self, gram: torch.Tensor, losses: Optional[torch.Tensor]) -> torch.Tensor:
        """``gram (T, T)`` float64 -> ``c (T,)``; may update the method's state (called once per step)."""
        raise NotImplementedError

    def own_loss(self, gram: torch.Tensor, losses: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """A loss for the method's own parameters (GradNorm), or None."""
        return None

    def head_weights(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Weights of the task losses for the task-specific parameters (see ``head_weights_mode``)."""
        if self.head_weights_mode == "coefficients":
            return coefficients
        return torch.ones_like(coefficients)

    def combine(self, grads: torch.Tensor, losses: Optional[torch.Tensor] = None):
        """``grads (T, D)`` -> ``(combined (D,), coefficients (T,))``; updates the state once."""
        gram = (grads @ grads.T).double()
        c = self.coefficients(gram, losses)
        self.last_weights = c.detach().float().cpu()
        return c.to(grads.dtype) @ grads, c.float()

    def forward(self, losses: Optional[torch.Tensor], grads: torch.Tensor) -> WeightingResult:
        """``losses (T,)`` (None for methods that do not read them) and ``grads (T, D)``.

        ``result.loss`` is the loss of the method's own parameters (GradNorm) or None."""
        if grads.dim() != 2 or grads.shape[0] != self.num_tasks:
            raise ValueError(f"weighting {self.name}: expected grads of shape ({self.num_tasks}, D), got {tuple(grads.shape)}")
        if losses is not None:
            self._check_losses(losses)
            losses = losses.detach().double()
        own = self.own_loss((grads @ grads.T).double(), losses) if self.gram_only else None
        combined, c = self.combine(grads, losses)
        return WeightingResult(c, combined, own)
