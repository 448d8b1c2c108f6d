"""Streaming evaluation metrics (definitions as in the course grader, see seed-facts.md).

* mIoU: one confusion matrix over the whole split, ignore label dropped, argmax predictions,
  ``IoU_c = 100 * TP / (TP + FP + FN)``, mean over all classes (an unseen class counts 0).
* SI-logRMSE: per image over valid ground-truth pixels (finite, > 0), predictions clamped to
  the dataset's depth range, both floored at 0.01 m, ``d = log(gt) - log(pred)``,
  ``100 * sqrt(mean(d^2) - mean(d)^2)``; averaged over images with at least one valid pixel.
* multitask = mIoU - SI-logRMSE.
* KITTI/NYU extras over all valid pixels of the split: abs-rel, RMSE (m), delta < 1.25^k.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from .kernels.silog import silog

DEPTH_FLOOR = 0.01


class SemsegMeter:
    """Confusion-matrix mIoU. ``update(logits (N, C, H, W) or labels (N, H, W), target (N, H, W))``."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        labels = prediction.argmax(dim=1) if prediction.dim() == 4 else prediction
        if labels.shape != target.shape:
            raise ValueError(f"semseg prediction {tuple(labels.shape)} and target {tuple(target.shape)} differ in shape")
        keep = target != self.ignore_index
        t = target[keep].long()
        if t.numel() and (t.min() < 0 or t.max() >= self.num_classes):
            raise ValueError(f"semseg target holds labels outside 0..{self.num_classes - 1} (other than {self.ignore_index})")
        idx = t * self.num_classes + labels[keep].long()
        self.confusion += torch.bincount(idx, minlength=self.num_classes ** 2).reshape(self.num_classes, -1).cpu()

    def iou_per_class(self) -> torch.Tensor:
        """``(num_classes,)`` IoU in percent; 0 for a class with no TP + FP + FN."""
        cm = self.confusion.double()
        tp = cm.diag()
        denom = cm.sum(0) + cm.sum(1) - tp
        return torch.where(denom > 0, 100.0 * tp / denom.clamp_min(1), torch.zeros_like(tp))

    def compute(self) -> Dict[str, float]:
        return {"miou": float(self.iou_per_class().mean())}


def si_log_rmse_per_image(pred: torch.Tensor, target: torch.Tensor, depth_range: Tuple[float, float]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-image SI-logRMSE of metric depth maps ``(N, 1, H, W)`` or ``(N, H, W)``, in float64.

    Computed by the ``fastmtl.silog_stats`` reduction (Triton on CUDA). Returns
    ``(values (N,), valid (N,) bool)``; images with no valid pixel have ``valid = False``
    (and value 0). NaN predictions count as the far end of the range.
    """
    pred = torch.nan_to_num(pred.double(), nan=depth_range[1])
    values = silog(pred, target.double(), min_depth=depth_range[0], max_depth=depth_range[1], eps=DEPTH_FLOOR)
    valid = ~values.isnan()
    return torch.where(valid, values, torch.zeros_like(values)), valid


class DepthMeter:
    """SI-logRMSE (per image, averaged) plus abs-rel, RMSE and delta accuracies.

    ``update(pred, target)`` with metric depth ``(N, 1, H, W)``; NaN / non-positive targets are
    invalid.
    """

    def __init__(self, depth_range: Tuple[float, float] = (4.0, 300.0)):
        self.depth_range = (float(depth_range[0]), float(depth_range[1]))
        self.si_sum, self.si_count = 0.0, 0
        self.abs_rel_sum, self.sq_sum, self.pixels = 0.0, 0.0, 0
        self.delta_counts = [0, 0, 0]

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(f"depth prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        si, has_valid = si_log_rmse_per_image(pred, target, self.depth_range)
        self.si_sum += float(si[has_valid].sum())
        self.si_count += int(has_valid.sum())
        valid = torch.isfinite(target) & (target > 0)
        gt = target[valid].double().clamp_min(DEPTH_FLOOR)
        p = torch.nan_to_num(pred[valid].double(), nan=self.depth_range[1]).clamp(*self.depth_range).clamp_min(DEPTH_FLOOR)
        self.abs_rel_sum += float(((p - gt).abs() / gt).sum())
        self.sq_sum += float(((p - gt) ** 2).sum())
        self.pixels += gt.numel()
        ratio = torch.maximum(p / gt, gt / p)
        for k in range(3):
            self.delta_counts[k] += int((ratio < 1.25 ** (k + 1)).sum())

    def compute(self) -> Dict[str, float]:
        n = max(self.pixels, 1)
        out = {
            "si_log_rmse": self.si_sum / self.si_count if self.si_count else float("nan"),
            "abs_rel": self.abs_rel_sum / n,
            "rmse": (self.sq_sum / n) ** 0.5,
        }
        for k in range(3):
            out[f"delta{k + 1}"] = 100.0 * self.delta_counts[k] / n
        return out


class MultiTaskMeter:
    """Both meters and the multitask score ``miou - si_log_rmse``."""

    def __init__(self, num_classes: int, depth_range: Tuple[float, float], ignore_index: int = 255):
        self.semseg = SemsegMeter(num_classes, ignore_index)
        self.depth = DepthMeter(depth_range)

    def update(self, semseg_logits, semseg_target, depth_pred_m, depth_target_m) -> None:
        self.semseg.update(semseg_logits, semseg_target)
        self.depth.update(depth_pred_m, depth_target_m)

    def compute(self) -> Dict[str, float]:
        out = {**self.semseg.compute(), **self.depth.compute()}
        out["multitask"] = out["miou"] - out["si_log_rmse"]
        return out
