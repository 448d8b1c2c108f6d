"""Training losses: cross-entropy, depth L1 / L2 / scale-invariant log, deep supervision, task weights.

Depth targets are ``(N, 1, H, W)`` with NaN (or non-finite) where invalid. L1 and L2 are
computed per image as the mean over valid pixels, then averaged over the images that have
at least one valid pixel (the template's L2; the report's L1), so an image without valid
depth contributes nothing and never a NaN.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

Prediction = Union[torch.Tensor, Sequence[torch.Tensor]]


def semseg_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy of ``logits (N, C, H, W)`` against ``target (N, H, W)`` int64; 0 if all ignored."""
    if bool((target != ignore_index).any()):
        return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
    return logits.sum() * 0.0


def _per_image_masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid pixels per image, averaged over images with >= 1 valid pixel."""
    values = torch.where(valid, values, torch.zeros_like(values)).flatten(1)
    count = valid.flatten(1).sum(1)
    per_image = values.sum(1) / count.clamp_min(1)
    has = count > 0
    return (per_image * has).sum() / has.sum().clamp_min(1)


def depth_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean |pred - target| over finite targets, averaged over images."""
    valid = torch.isfinite(target)
    return _per_image_masked_mean((pred.float() - torch.nan_to_num(target)).abs(), valid)


def depth_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean (pred - target)^2 over finite targets, averaged over images (the template's loss)."""
    valid = torch.isfinite(target)
    return _per_image_masked_mean((pred.float() - torch.nan_to_num(target)) ** 2, valid)


def deep_supervision(loss_fn: Callable[[torch.Tensor], torch.Tensor], prediction: Prediction) -> torch.Tensor:
    """``loss_fn`` of a single prediction, or the mean over a list of predictions."""
    if isinstance(prediction, (list, tuple)):
        return torch.stack([loss_fn(p) for p in prediction]).mean()
    return loss_fn(prediction)


def last_prediction(prediction: Prediction) -> torch.Tensor:
    """The prediction used for evaluation: the last element of a deep-supervision list."""
    return prediction[-1] if isinstance(prediction, (list, tuple)) else prediction


class MultiTaskLoss(nn.Module):
    """``w_seg * CE + w_depth * depth_loss`` with deep supervision over prediction lists.

    Args:
        depth_loss: ``"l1"`` or ``"l2"`` on normalised depth, or ``"silog"`` (scale-invariant
            log loss of Eigen et al. on metric log-depth, via :class:`fastmtl.nn.SILogLoss`).
        normalizer: the :class:`fastmtl.data.DepthNormalizer` of the run; ``silog`` uses it to
            turn network outputs into log-depth.
        silog_lambda: the lambda of the scale-invariant loss (1 = fully scale invariant).

    ``forward(outputs, semseg_target (N, H, W), depth_target_m (N, 1, H, W))`` returns
    ``(total, {"semseg": ..., "depth": ...})``; outputs are the model's dict.
    """

    def __init__(self, weight_semseg: float = 0.5, weight_depth: float = 0.5, depth_loss: str = "l1",
                 normalizer=None, silog_lambda: float = 0.85, ignore_index: int = 255):
        super().__init__()
        if depth_loss not in ("l1", "l2", "silog"):
            raise ValueError(f"depth_loss must be one of l1, l2, silog, got {depth_loss!r}")
        if normalizer is None:
            raise ValueError("MultiTaskLoss needs the run's DepthNormalizer")
        self.weights = {"semseg": float(weight_semseg), "depth": float(weight_depth)}
        self.depth_loss = depth_loss
        self.normalizer = normalizer
        self.ignore_index = ignore_index
        if depth_loss == "silog":
            from fastmtl.nn import SILogLoss

            self.silog = SILogLoss(lam=silog_lambda, log_input=True)

    def depth_term(self, pred: torch.Tensor, target_m: torch.Tensor, target_norm: torch.Tensor) -> torch.Tensor:
        if self.depth_loss == "l1":
            return depth_l1(pred, target_norm)
        if self.depth_loss == "l2":
            return depth_l2(pred, target_norm)
        return self.silog(self.normalizer.to_log_depth(pred.float()), target_m)

    def forward(self, outputs: Dict[str, Prediction], semseg_target: torch.Tensor,
                depth_target_m: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        depth_target_norm = self.normalizer.normalize(depth_target_m)
        parts = {
            "semseg": deep_supervision(lambda p: semseg_loss(p, semseg_target, self.ignore_index), outputs["semseg"]),
            "depth": deep_supervision(lambda p: self.depth_term(p, depth_target_m, depth_target_norm), outputs["depth"]),
        }
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, parts

