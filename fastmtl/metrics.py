"""Streaming evaluation metrics (definitions as in the course grader, see seed-facts.md).

* mIoU: one confusion matrix over the whole split, ignore label dropped, argmax predictions,
  ``IoU_c = 100 * TP / (TP + FP + FN)``, mean over all classes (an unseen class counts 0).
* SI-logRMSE: per image over valid ground-truth pixels (finite, > 0), predictions clamped to
  the dataset's depth range, both floored at 0.01 m, ``d = log(gt) - log(pred)``,
  ``100 * sqrt(mean(d^2) - mean(d)^2)``; averaged over images with at least one valid pixel.
* multitask = mIoU - SI-logRMSE (in general: the tasks' headline metrics, signed so that higher
  is better, summed; see :class:`TasksMeter`).
* KITTI/NYU extras over all valid pixels of the split: abs-rel, RMSE (m), delta < 1.25^k.
* LibMTL's (``examples/nyu/utils.py``), so numbers compare with its tables: pixel accuracy
  ``100 * trace(CM) / sum(CM)`` of the same confusion matrix (SegMetric); depth ``abs_err`` =
  mean ``|pred - gt|`` and ``rel_err`` = mean ``|pred - gt| / gt`` over all valid pixels of the
  split, predictions NOT clamped (DepthMetric: its per-batch means are weighted by the batch's
  count of valid pixels, ``bs`` being appended after ``masked_select``, which is the pixel mean
  over the split). Surface normals: :mod:`fastmtl.tasks.normals`.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

from .kernels.silog import silog

DEPTH_FLOOR = 0.01


class SemsegMeter:
    """Confusion-matrix mIoU and pixel accuracy. ``update(logits (N, C, H, W) or labels (N, H, W),
    target (N, H, W))``. With ``class_names``, :meth:`compute` adds ``iou_per_class``
    ``{name: IoU %}``."""

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Optional[Sequence[str]] = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
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

    def pixel_accuracy(self) -> float:
        """Percent of scored pixels whose argmax is right (LibMTL's pixAcc); 0 with none scored."""
        total = int(self.confusion.sum())
        return 100.0 * int(self.confusion.diag().sum()) / total if total else 0.0

    def compute(self) -> Dict[str, float]:
        iou = self.iou_per_class()
        out = {"miou": float(iou.mean()), "pixel_acc": self.pixel_accuracy()}
        if self.class_names is not None:
            out["iou_per_class"] = dict(zip(self.class_names, iou.tolist()))
        return out


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
    """SI-logRMSE (per image, averaged) plus abs-rel, RMSE, delta accuracies and LibMTL's abs/rel error.

    ``update(pred, target)`` with metric depth ``(N, 1, H, W)``; NaN / non-positive targets are
    invalid.
    """

    def __init__(self, depth_range: Tuple[float, float] = (4.0, 300.0)):
        self.depth_range = (float(depth_range[0]), float(depth_range[1]))
        self.si_sum, self.si_count = 0.0, 0
        self.abs_rel_sum, self.sq_sum, self.pixels = 0.0, 0.0, 0
        self.delta_counts = [0, 0, 0]
        self.abs_err_sum, self.rel_err_sum = 0.0, 0.0

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
        gt_raw = target[valid].double()  # LibMTL: raw prediction and target, no clamps or floors
        err = (torch.nan_to_num(pred[valid].double(), nan=self.depth_range[1]) - gt_raw).abs()
        self.abs_err_sum += float(err.sum())
        self.rel_err_sum += float((err / gt_raw).sum())

    def compute(self) -> Dict[str, float]:
        n = max(self.pixels, 1)
        out = {
            "si_log_rmse": self.si_sum / self.si_count if self.si_count else float("nan"),
            "abs_rel": self.abs_rel_sum / n,
            "rmse": (self.sq_sum / n) ** 0.5,
        }
        for k in range(3):
            out[f"delta{k + 1}"] = 100.0 * self.delta_counts[k] / n
        out["abs_err"] = self.abs_err_sum / n
        out["rel_err"] = self.rel_err_sum / n
        return out


class TasksMeter:
    """One meter per task, merged.

    Args:
        meters: ``{task: meter}``, each with ``update(prediction, target)`` and ``compute()``.
        score: ``{metric: +1 or -1}``; ``compute()`` adds ``multitask = sum(sign * metric)`` (the
            trainer passes each task's headline metric with its direction: for semseg + depth,
            ``miou - si_log_rmse``).
    """

    def __init__(self, meters: Mapping[str, object], score: Mapping[str, int]):
        self.meters, self.score = dict(meters), dict(score)

    def update(self, predictions: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> None:
        """``{task: prediction}`` (in the task's units) and ``{task: target}`` of one batch."""
        for name, meter in self.meters.items():
            meter.update(predictions[name], targets[name])

    def compute(self) -> Dict[str, float]:
        out: Dict = {}
        for meter in self.meters.values():
            out.update(meter.compute())
        out["multitask"] = sum(sign * out[k] for k, sign in self.score.items())
        return out


class MultiTaskMeter(TasksMeter):
    """The semseg + depth meters and the multitask score ``miou - si_log_rmse``."""

    def __init__(self, num_classes: int, depth_range: Tuple[float, float], ignore_index: int = 255):
        self.semseg = SemsegMeter(num_classes, ignore_index)
        self.depth = DepthMeter(depth_range)
        super().__init__({"semseg": self.semseg, "depth": self.depth}, {"miou": +1, "si_log_rmse": -1})

    def update(self, semseg_logits, semseg_target, depth_pred_m, depth_target_m) -> None:
        super().update({"semseg": semseg_logits, "depth": depth_pred_m},
                       {"semseg": semseg_target, "depth": depth_target_m})
