"""Generic training-loss pieces: masked per-image means, deep supervision, the weighted sum over the
run's tasks (each task's own loss lives with it in :mod:`fastmtl.tasks`)."""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

Prediction = Union[torch.Tensor, Sequence[torch.Tensor]]


def per_image_masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``values`` and bool ``valid`` ``(N, ...)``: the mean over valid entries per image, averaged over
    the images with >= 1 valid entry (0-d; 0 when no image has one)."""
    values = torch.where(valid, values, torch.zeros_like(values)).flatten(1)
    count = valid.flatten(1).sum(1)
    per_image = values.sum(1) / count.clamp_min(1)
    has = count > 0
    return (per_image * has).sum() / has.sum().clamp_min(1)


def deep_supervision(loss_fn: Callable[[torch.Tensor], torch.Tensor], prediction: Prediction) -> torch.Tensor:
    """``loss_fn`` of a single prediction, or the mean over a list of predictions."""
    if isinstance(prediction, (list, tuple)):
        return torch.stack([loss_fn(p) for p in prediction]).mean()
    return loss_fn(prediction)


def last_prediction(prediction: Prediction) -> torch.Tensor:
    """The prediction used for evaluation: the last element of a deep-supervision list."""
    return prediction[-1] if isinstance(prediction, (list, tuple)) else prediction


class MultiTaskLoss(nn.Module):
    """``sum_t w_t * L_t`` over the run's tasks (:class:`fastmtl.tasks.Task`, each term from its
    ``loss_for``), with deep supervision over prediction lists.

    ``MultiTaskLoss(tasks, weights={task: w})``; ``forward(outputs, targets)`` with the model's
    output dict and ``targets = {task: target}`` returns ``(total, {task: loss})`` (0-d tensors).
    """

    def __init__(self, tasks: Sequence, weights: Mapping[str, float]):
        super().__init__()
        if set(weights) != {t.name for t in tasks}:
            raise ValueError(f"MultiTaskLoss: weights {sorted(weights)} must name exactly the tasks "
                             f"{[t.name for t in tasks]}")
        self.tasks = list(tasks)
        self.weights = {t.name: float(weights[t.name]) for t in self.tasks}

    def forward(self, outputs: Mapping[str, Prediction],
                targets: Mapping[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        parts = {t.name: deep_supervision(t.loss_for(targets[t.name]), outputs[t.name]) for t in self.tasks}
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, parts
