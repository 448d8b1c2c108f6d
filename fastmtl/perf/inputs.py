"""Synthetic inputs of the performance tools: a dataset description (:func:`synthetic_info`) and
a random batch of a run's tasks (:func:`random_batch`) in the data pipeline's layouts."""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch

from fastmtl.config import ConfigError
from fastmtl.data import DatasetInfo
from fastmtl.data.classes import CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX
from fastmtl.data.synthetic import DEPTH_RANGE

# log-depth statistics of a street scene (the log normaliser's mean 2.5, std 1.0)
DEPTH_STATS = {"mean": 20.0, "std": 15.0, "log_mean": 2.5, "log_std": 1.0}
INVALID_DEPTH = 0.1  # share of depth pixels without ground truth (NaN)


def synthetic_info(tasks: Sequence[str], num_classes: int = len(CLASS_NAMES)) -> DatasetInfo:
    """A Cityscapes-like dataset with ``num_classes`` semantic classes and targets for ``tasks``."""
    names = tuple(CLASS_NAMES[i] if i < len(CLASS_NAMES) else f"class {i}" for i in range(num_classes))
    colors = tuple(CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(num_classes))
    return DatasetInfo(num_classes, names, colors, IGNORE_INDEX, DEPTH_RANGE, dict(DEPTH_STATS), tuple(tasks))


def _semseg(info: DatasetInfo, shape, gen, device) -> torch.Tensor:
    """``(N, H, W)`` int64 trainIds."""
    return torch.randint(0, info.num_classes, shape, generator=gen, device=device)


def _depth(info: DatasetInfo, shape, gen, device) -> torch.Tensor:
    """``(N, 1, H, W)`` metres within the depth range, :data:`INVALID_DEPTH` of them NaN."""
    n, h, w = shape
    lo, hi = info.depth_range
    depth = torch.rand((n, 1, h, w), generator=gen, device=device) * (hi - lo) + lo
    return torch.where(torch.rand(depth.shape, generator=gen, device=device) < INVALID_DEPTH, math.nan, depth)


def _normals(info: DatasetInfo, shape, gen, device) -> torch.Tensor:
    """``(N, 3, H, W)`` unit vectors."""
    n, h, w = shape
    v = torch.randn((n, 3, h, w), generator=gen, device=device)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-6)


# the one table of target layouts by task (what each task's reader yields)
RANDOM_TARGETS = {"semseg": _semseg, "depth": _depth, "normals": _normals}


def random_batch(tasks: Sequence[str], info: DatasetInfo, batch: int, size: Tuple[int, int], device,
                 seed: int = 0) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """``(rgb (N, 3, H, W), {task: target})`` on ``device``, random from ``seed``."""
    device = torch.device(device)
    unknown = [t for t in tasks if t not in RANDOM_TARGETS]
    if unknown:
        raise ConfigError(f"--tasks {','.join(unknown)}: no synthetic targets for the performance tools "
                          f"(they have: {', '.join(RANDOM_TARGETS)})")
    h, w = size
    gen = torch.Generator(device=device).manual_seed(seed)
    rgb = torch.randn((batch, 3, h, w), generator=gen, device=device)
    return rgb, {t: RANDOM_TARGETS[t](info, (batch, h, w), gen, device) for t in tasks}
