"""Semantic segmentation: ``C`` logits per pixel (C = the dataset's classes), cross-entropy, mIoU and
pixel accuracy from one confusion matrix.

Target ``sample["semseg"]``: int64 ``(H, W)`` class ids, ``ignore_index`` (255) = not scored.

Metrics (the course template's grader's mIoU, docs/models.md): mIoU from one confusion matrix over the whole
split, ignore label dropped, argmax predictions, ``IoU_c = 100 * TP / (TP + FP + FN)``, mean over
all classes (an unseen class counts 0); LibMTL's pixel accuracy ``100 * trace(CM) / sum(CM)`` of
the same matrix (its SegMetric), so numbers compare with its tables.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.classes import CLASS_COLORS, IGNORE_INDEX, colorize
from .base import Task


def semseg_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy of ``logits (N, C, H, W)`` against ``target (N, H, W)`` int64, the mean over
    the pixels not ``ignore_index``; 0 (and zero gradients) if all are ignored. Computed on the
    device: the sum over the labelled pixels over their count (at least 1), no host read."""
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    return total / (target != ignore_index).sum().clamp_min(1)


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


class SemsegTask(Task):
    """Cross-entropy (``ignore_index`` dropped); flips mirror the label map; padding is ignore."""

    name = "semseg"
    label = "mIoU"
    pad_value = IGNORE_INDEX
    headline = "miou"
    metric_directions = {"miou": +1, "pixel_acc": +1}
    delta_m_metrics = ("miou", "pixel_acc")
    whole_split_in_mtan_style = True  # MTAN / Nash-MTL's ConfMatrix accumulates over the split
    legacy_weight = "weight_semseg"

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 class_names: Optional[Sequence[str]] = None,
                 colors: Optional[Sequence[Tuple[int, int, int]]] = None):
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.colors = [tuple(c) for c in colors] if colors is not None else list(CLASS_COLORS[:num_classes])

    @classmethod
    def random_target(cls, info, shape, generator, device) -> torch.Tensor:
        """``(N, H, W)`` int64 class ids in ``0 .. info.num_classes - 1``."""
        return torch.randint(0, info.num_classes, shape, generator=generator, device=device)

    @classmethod
    def output_channels(cls, num_classes: int) -> int:
        return int(num_classes)

    @classmethod
    def for_run(cls, cfg, info, state=None) -> "SemsegTask":
        return cls(info.num_classes, info.ignore_index, info.class_names, info.colors)

    @property
    def channels(self) -> int:
        return self.num_classes

    def loss_for(self, target):
        return lambda p: semseg_loss(p, target, self.ignore_index)

    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        return prediction.float()

    def meter(self) -> SemsegMeter:
        return SemsegMeter(self.num_classes, self.ignore_index, self.class_names)

    def to_array(self, decoded: torch.Tensor) -> np.ndarray:
        """``(C, H, W)`` logits -> ``(H, W)`` uint8 class ids."""
        return decoded.argmax(0).to(torch.uint8).cpu().numpy()

    def picture(self, array: np.ndarray) -> np.ndarray:
        return colorize(array, self.colors)

    def target_picture(self, target: torch.Tensor) -> np.ndarray:
        return colorize(target.numpy(), self.colors)

    def save_raw(self, array: np.ndarray, out_dir: Path, stem: str) -> List[Path]:
        """``{stem}_trainid.png``: 8-bit class ids."""
        path = Path(out_dir) / f"{stem}_trainid.png"
        Image.fromarray(array).save(path)
        return [path]

    def baseline(self, batches):
        """The most frequent validation class everywhere (``majority_class``)."""
        counts = torch.zeros(self.num_classes, dtype=torch.int64)
        for batch in batches():
            t = batch["semseg"]
            counts += torch.bincount(t[t != self.ignore_index].flatten(), minlength=self.num_classes)
        majority = int(counts.argmax())
        meter = SemsegMeter(self.num_classes, self.ignore_index)
        meter.confusion[:, majority] = counts  # what updates with ``majority`` everywhere would count
        return "majority_class", {"class": majority, **meter.compute()}


TASK = SemsegTask
