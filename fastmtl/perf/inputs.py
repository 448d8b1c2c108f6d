"""Synthetic inputs of the performance tools: a dataset description (:func:`synthetic_info`) and
a random batch of a run's tasks (:func:`random_batch`) in the data pipeline's layouts."""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch

from fastmtl.data import DatasetInfo
from fastmtl.data.classes import CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX
from fastmtl.data.synthetic import DEPTH_RANGE
from fastmtl.tasks import get as get_task

# log-depth statistics of a street scene (the log normaliser's mean 2.5, std 1.0)
DEPTH_STATS = {"mean": 20.0, "std": 15.0, "log_mean": 2.5, "log_std": 1.0}


def synthetic_info(tasks: Sequence[str], num_classes: int = len(CLASS_NAMES)) -> DatasetInfo:
    """A Cityscapes-like dataset with ``num_classes`` semantic classes and targets for ``tasks``."""
    names = tuple(CLASS_NAMES[i] if i < len(CLASS_NAMES) else f"class {i}" for i in range(num_classes))
    colors = tuple(CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(num_classes))
    return DatasetInfo(num_classes, names, colors, IGNORE_INDEX, DEPTH_RANGE, dict(DEPTH_STATS), tuple(tasks))


def random_batch(tasks: Sequence[str], info: DatasetInfo, batch: int, size: Tuple[int, int], device,
                 seed: int = 0) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """``(rgb (N, 3, H, W), {task: target})`` on ``device``, random from ``seed`` (each target from
    its task's :meth:`~fastmtl.tasks.Task.random_target`)."""
    device = torch.device(device)
    h, w = size
    gen = torch.Generator(device=device).manual_seed(seed)
    rgb = torch.randn((batch, 3, h, w), generator=gen, device=device)
    return rgb, {t: get_task(t).random_target(info, (batch, h, w), gen, device) for t in tasks}
