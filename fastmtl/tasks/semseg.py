"""Semantic segmentation: ``C`` logits per pixel (C = the dataset's classes), cross-entropy, mIoU and
pixel accuracy from one confusion matrix.

Target ``sample["semseg"]``: int64 ``(H, W)`` class ids, ``ignore_index`` (255) = not scored.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..data.classes import CLASS_COLORS, IGNORE_INDEX, colorize
from ..losses import semseg_loss
from ..metrics import SemsegMeter
from .base import Task


class SemsegTask(Task):
    """Cross-entropy (``ignore_index`` dropped); flips mirror the label map; padding is ignore."""

    name = "semseg"
    label = "mIoU"
    pad_value = IGNORE_INDEX
    headline = "miou"
    metric_directions = {"miou": +1, "pixel_acc": +1}
    delta_m_metrics = ("miou", "pixel_acc")

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 class_names: Optional[Sequence[str]] = None,
                 colors: Optional[Sequence[Tuple[int, int, int]]] = None):
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.colors = [tuple(c) for c in colors] if colors is not None else list(CLASS_COLORS[:num_classes])

    @classmethod
    def output_channels(cls, num_classes: int) -> int:
        return int(num_classes)

    @classmethod
    def for_run(cls, cfg, info, normalizer) -> "SemsegTask":
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
