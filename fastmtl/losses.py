"""Training losses: cross-entropy, depth L1 / L2 / scale-invariant log, deep supervision, task weights
(the tasks' own losses live with them in :mod:`fastmtl.tasks`).

Depth targets are ``(N, 1, H, W)`` with NaN (or non-finite) where invalid. L1 and L2 are
computed per image as the mean over valid pixels, then averaged over the images that have
at least one valid pixel (the template's L2; the report's L1), so an image without valid
depth contributes nothing and never a NaN.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

Prediction = Union[torch.Tensor, Sequence[torch.Tensor]]


def semseg_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy of ``logits (N, C, H, W)`` against ``target (N, H, W)`` int64; 0 if all ignored."""
    if bool((target != ignore_index).any()):
        return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
    return logits.sum() * 0.0


def per_image_masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid pixels per image, averaged over images with >= 1 valid pixel."""
    values = torch.where(valid, values, torch.zeros_like(values)).flatten(1)
    count = valid.flatten(1).sum(1)
    per_image = values.sum(1) / count.clamp_min(1)
    has = count > 0
    return (per_image * has).sum() / has.sum().clamp_min(1)


def depth_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean |pred - target| over finite targets, averaged over images."""
    valid = torch.isfinite(target)
    return per_image_masked_mean((pred.float() - torch.nan_to_num(target)).abs(), valid)


def depth_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean (pred - target)^2 over finite targets, averaged over images (the template's loss)."""
    valid = torch.isfinite(target)
    return per_image_masked_mean((pred.float() - torch.nan_to_num(target)) ** 2, valid)


def deep_supervision(loss_fn: Callable[[torch.Tensor], torch.Tensor], prediction: Prediction) -> torch.Tensor:
    """``loss_fn`` of a single prediction, or the mean over a list of predictions."""
    if isinstance(prediction, (list, tuple)):
        return torch.stack([loss_fn(p) for p in prediction]).mean()
    return loss_fn(prediction)


def last_prediction(prediction: Prediction) -> torch.Tensor:
    """The prediction used for evaluation: the last element of a deep-supervision list."""
    return prediction[-1] if isinstance(prediction, (list, tuple)) else prediction


class MultiTaskLoss(nn.Module):
    """``sum_t w_t * L_t`` over the run's tasks, with deep supervision over prediction lists.

    ``MultiTaskLoss(tasks=[Task, ...], weights={task: w})``: the generic form (the trainer's), one
    term per :class:`fastmtl.tasks.Task` from its ``loss_for``.

    ``MultiTaskLoss(weight_semseg, weight_depth, depth_loss, normalizer, silog_lambda, ignore_index)``:
    the semseg + depth loss, ``w_seg * CE + w_depth * depth_loss`` (``depth_loss`` ``"l1"`` / ``"l2"`` on
    normalised depth, or ``"silog"``, the scale-invariant log loss of Eigen et al. on log-depth via
    :class:`fastmtl.nn.SILogLoss`, with ``normalizer`` the run's :class:`fastmtl.data.DepthNormalizer`).

    ``forward(outputs, targets)`` with ``targets = {task: target}`` (or, for semseg + depth,
    ``forward(outputs, semseg_target (N, H, W), depth_target_m (N, 1, H, W))``) returns
    ``(total, {task: loss})``; outputs are the model's dict.
    """

    def __init__(self, weight_semseg: float = 0.5, weight_depth: float = 0.5, depth_loss: str = "l1",
                 normalizer=None, silog_lambda: float = 0.85, ignore_index: int = 255, *,
                 tasks: Optional[Sequence] = None, weights: Optional[Dict[str, float]] = None):
        super().__init__()
        if tasks is None:
            from fastmtl.tasks.depth import DepthTask
            from fastmtl.tasks.semseg import SemsegTask

            if normalizer is None:
                raise ValueError("MultiTaskLoss needs the run's DepthNormalizer")
            # the class count only matters to the metrics; the loss reads it from the logits
            tasks = [SemsegTask(1, ignore_index), DepthTask(normalizer, loss=depth_loss, silog_lambda=silog_lambda)]
            weights = {"semseg": weight_semseg, "depth": weight_depth}
        if weights is None or set(weights) != {t.name for t in tasks}:
            raise ValueError(f"MultiTaskLoss: weights {sorted(weights or {})} must name exactly the tasks "
                             f"{[t.name for t in tasks]}")
        self.tasks = list(tasks)
        self.weights = {t.name: float(weights[t.name]) for t in self.tasks}

    def forward(self, outputs: Dict[str, Prediction], *targets) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        if len(targets) == 1 and isinstance(targets[0], dict):
            targets = targets[0]
        elif len(targets) == 2:
            targets = {"semseg": targets[0], "depth": targets[1]}
        else:
            raise TypeError("MultiTaskLoss(outputs, targets): targets is a {task: target} dict "
                            "(or the semseg and depth targets)")
        parts = {t.name: deep_supervision(t.loss_for(targets[t.name]), outputs[t.name]) for t in self.tasks}
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, parts
