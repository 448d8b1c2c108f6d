"""Monocular depth: one channel regressing normalised (optionally log) depth; losses L1 / L2 on the
normalised target or the scale-invariant log loss; SI-logRMSE, the KITTI/NYU extras and LibMTL's
abs/rel error.

Target ``sample["depth"]``: float32 ``(1, H, W)`` metres, NaN = invalid (padding is NaN). A flip
mirrors the map; rescaling is nearest-neighbour and leaves the values (metres) unchanged.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch

from ..losses import depth_l1, depth_l2
from ..metrics import DepthMeter
from .base import Task

DEPTH_LOSSES = ("l1", "l2", "silog")


def depth_colormap(depth_m: np.ndarray, depth_range: Sequence[float]) -> np.ndarray:
    """``(H, W)`` metres -> ``(H, W, 3)`` uint8, near = warm, far = cool, on a log scale."""
    lo, hi = float(depth_range[0]), float(depth_range[1])
    t = (np.log(np.clip(depth_m, lo, hi)) - np.log(lo)) / (np.log(hi) - np.log(lo))
    # a compact "turbo"-like ramp: red (near) -> yellow -> green -> blue (far)
    stops = np.array([[180, 4, 38], [245, 160, 40], [220, 230, 60], [60, 190, 120], [40, 80, 190], [30, 30, 90]], np.float32)
    pos = t * (len(stops) - 1)
    i = np.clip(pos.astype(np.int64), 0, len(stops) - 2)
    frac = (pos - i)[..., None]
    return (stops[i] * (1 - frac) + stops[i + 1] * frac).astype(np.uint8)


class DepthTask(Task):
    """Depth in metres through the run's :class:`~fastmtl.data.DepthNormalizer`.

    Args:
        normalizer: maps metres to the network's target and back.
        depth_range: ``(min, max)`` metres of the dataset (metric clamps, pictures).
        loss: ``l1`` / ``l2`` (per-image mean over valid pixels of the normalised target, averaged
            over images) or ``silog`` (Eigen et al. on log-depth, ``silog_lambda``).
        mean_depth: the train mean in metres (the ``mean_depth`` baseline).
    """

    name = "depth"
    label = "SI-logRMSE"
    pad_value = math.nan
    headline = "si_log_rmse"
    metric_directions = {"si_log_rmse": -1, "abs_rel": -1, "rmse": -1, "delta1": +1, "delta2": +1, "delta3": +1,
                         "abs_err": -1, "rel_err": -1}
    delta_m_metrics = ("abs_err", "rel_err")

    def __init__(self, normalizer, depth_range: Tuple[float, float] = (4.0, 300.0), loss: str = "l1",
                 silog_lambda: float = 0.85, mean_depth: float = float("nan")):
        if loss not in DEPTH_LOSSES:
            raise ValueError(f"depth_loss must be one of {', '.join(DEPTH_LOSSES)}, got {loss!r}")
        if normalizer is None:
            raise ValueError("the depth task needs the run's DepthNormalizer")
        self.normalizer, self.depth_range, self.loss = normalizer, tuple(float(v) for v in depth_range), loss
        self.mean_depth = float(mean_depth)
        if loss == "silog":
            from ..nn import SILogLoss

            self.silog = SILogLoss(lam=silog_lambda, log_input=True)

    @classmethod
    def output_channels(cls, num_classes: int) -> int:
        return 1

    @classmethod
    def for_run(cls, cfg, info, normalizer) -> "DepthTask":
        return cls(normalizer, info.depth_range, cfg.depth_loss, mean_depth=float(info.depth_stats["mean"]))

    @property
    def channels(self) -> int:
        return 1

    def loss_for(self, target_m):
        """``target_m (N, 1, H, W)`` metres; normalised once for every deep-supervision element."""
        target_norm = self.normalizer.normalize(target_m)
        if self.loss == "l1":
            return lambda p: depth_l1(p, target_norm)
        if self.loss == "l2":
            return lambda p: depth_l2(p, target_norm)
        return lambda p: self.silog(self.normalizer.to_log_depth(p.float()), target_m)

    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        return self.normalizer.denormalize(prediction.float())

    def meter(self) -> DepthMeter:
        return DepthMeter(self.depth_range)

    def to_array(self, decoded: torch.Tensor) -> np.ndarray:
        """``(1, H, W)`` metres -> ``(H, W)`` float32 metres."""
        return decoded[0].cpu().numpy().astype(np.float32)

    def picture(self, array: np.ndarray) -> np.ndarray:
        return depth_colormap(array, self.depth_range)

    def save_raw(self, array: np.ndarray, out_dir: Path, stem: str) -> List[Path]:
        """``{stem}_depth.npy``: float32 ``(H, W)`` metres."""
        path = Path(out_dir) / f"{stem}_depth.npy"
        np.save(path, array)
        return [path]

    def _near_is_bright(self, d: torch.Tensor) -> torch.Tensor:
        """Log scale over the depth range, near = bright; invalid depth is black."""
        lo, hi = self.depth_range
        return (1 - (d.clamp(lo, hi).log() - math.log(lo)) / math.log(hi / lo)).nan_to_num(0.0)

    def log_images(self, writer, decoded, raw, target, step) -> None:
        """Grey depth pictures (``val/depth_pred``, ``val/depth_gt``; near = bright) and histograms of
        the normalised target (the whole batch) and prediction (report Fig. 22)."""
        n = len(decoded)
        writer.add_images("val/depth_pred", self._near_is_bright(decoded), step)
        valid = torch.isfinite(target) & (target > 0)
        writer.add_images("val/depth_gt", self._near_is_bright(target[:n].where(valid[:n], torch.nan)), step)
        writer.add_histogram("depth/target_normalized", self.normalizer.normalize(target[valid]), step)
        writer.add_histogram("depth/pred_normalized", raw.float().flatten().cpu(), step)

    def target_picture(self, target: torch.Tensor) -> np.ndarray:
        return depth_colormap(target[0].numpy(), self.depth_range)

    def baseline(self, batches):
        """The train mean depth everywhere (``mean_depth``)."""
        meter = DepthMeter(self.depth_range)
        for batch in batches():
            meter.update(torch.full_like(batch["depth"], self.mean_depth), batch["depth"])
        return "mean_depth", {"depth_m": self.mean_depth, **meter.compute()}


TASK = DepthTask
