"""Surface normals: three channels, L2-normalised to unit vectors; losses ``cosine`` (1 - cos) and
``l1``; LibMTL's angle-error metrics.

Target ``sample["normals"]``: float32 ``(3, H, W)`` unit vectors in camera coordinates, channel 0 =
x (image right), 1 = y (image down), 2 = z (forward, into the scene; a surface facing the camera
has z < 0); the zero vector marks an invalid pixel (and is the padding). A horizontal flip mirrors
the map and negates x (as LibMTL's NYUv2 augmentation does); rescaling is nearest-neighbour with the
vectors unchanged (bilinear would blend invalid zeros into valid vectors).

Everything here works in any right-handed camera frame as long as targets and predictions share it;
only the flip rule (x is channel 0) and the pictures depend on the convention.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

from ..losses import per_image_masked_mean
from .base import Task, TaskOption

NORMALS_LOSSES = ("cosine", "l1")
THRESHOLDS = (11.25, 22.5, 30.0)
MEDIAN_BIN = 1e-3  # degrees: the streaming median is exact to half a bin


def valid_normals(target: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, H, W)`` bool: the target is not the zero vector."""
    return (target != 0).any(dim=1)


def unit(prediction: torch.Tensor) -> torch.Tensor:
    """L2-normalise over the channel dim (dim 1), float32; a zero vector stays zero."""
    return F.normalize(prediction.float(), dim=1, eps=1e-12)


def normals_cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - cos(pred, target)`` per valid pixel (pred L2-normalised), mean per image, averaged over
    images with a valid pixel. ``(N, 3, H, W)`` each."""
    cos = (unit(prediction) * target).sum(1)
    return per_image_masked_mean(1 - cos, valid_normals(target))


def normals_l1_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``sum_c |pred_c - target_c|`` per valid pixel (pred L2-normalised), reduced as the cosine loss."""
    return per_image_masked_mean((unit(prediction) - target).abs().sum(1), valid_normals(target))


def angle_errors(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Angles in degrees (float64) between unit predictions and targets at the valid pixels (1-D);
    a non-finite prediction counts as 180 degrees."""
    cos = (prediction.double() * target.double()).sum(1)[valid_normals(target)]
    return torch.rad2deg(torch.acos(cos.nan_to_num(-1.0, -1.0, -1.0).clamp(-1.0, 1.0)))


class NormalsMeter:
    """LibMTL's NormalMetric, streaming: over all valid pixels of the split, the angle error's mean,
    median (from a histogram of :data:`MEDIAN_BIN` degrees, exact to half a bin) and the percentages
    under 11.25, 22.5 and 30 degrees (strict ``<``).

    ``update(unit_pred (N, 3, H, W), target (N, 3, H, W))``; the prediction must be unit vectors
    (:func:`unit`). Keys: ``angle_mean``, ``angle_median`` (degrees), ``angle_within_11.25``,
    ``angle_within_22.5``, ``angle_within_30`` (percent).
    """

    def __init__(self):
        self.bins = int(round(180 / MEDIAN_BIN)) + 1
        self.histogram = torch.zeros(self.bins, dtype=torch.int64)
        self.total, self.count = 0.0, 0
        self.within = [0] * len(THRESHOLDS)

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        if prediction.shape != target.shape or prediction.dim() != 4 or prediction.shape[1] != 3:
            raise ValueError(f"normals prediction {tuple(prediction.shape)} and target {tuple(target.shape)} "
                             f"must both be (N, 3, H, W)")
        err = angle_errors(prediction, target).cpu()
        self.total += float(err.sum())
        self.count += err.numel()
        for k, t in enumerate(THRESHOLDS):
            self.within[k] += int((err < t).sum())
        idx = (err / MEDIAN_BIN).floor().long().clamp_(0, self.bins - 1)
        self.histogram += torch.bincount(idx, minlength=self.bins)

    def _kth(self, k: int) -> float:
        """The k-th smallest error (0-based) as its bin's centre."""
        b = int(torch.searchsorted(self.histogram.cumsum(0), k + 1))
        return (b + 0.5) * MEDIAN_BIN

    def compute(self) -> Dict[str, float]:
        n = self.count
        if n == 0:
            nan = float("nan")
            return {"angle_mean": nan, "angle_median": nan, **{f"angle_within_{t:g}": nan for t in THRESHOLDS}}
        median = self._kth(n // 2) if n % 2 else 0.5 * (self._kth(n // 2 - 1) + self._kth(n // 2))
        out = {"angle_mean": self.total / n, "angle_median": median}
        for k, t in enumerate(THRESHOLDS):
            out[f"angle_within_{t:g}"] = 100.0 * self.within[k] / n
        return out


def encode_normals_png(normals: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` unit vectors -> uint8 RGB, ``v = round((n + 1) * 127.5)``, so the reader's
    ``n = v / 127.5 - 1`` gives them back; the zero vector (invalid) -> (0, 0, 0)."""
    v = np.clip(np.rint((normals + 1.0) * 127.5), 0, 255).astype(np.uint8)
    v[~(normals != 0).any(-1)] = 0
    return v


class NormalsTask(Task):
    """Unit surface normals. ``loss``: ``cosine`` (default, LibMTL's) or ``l1``."""

    name = "normals"
    label = "normals mean angle"
    pad_value = 0.0
    headline = "angle_mean"
    metric_directions = {"angle_mean": -1, "angle_median": -1, **{f"angle_within_{t:g}": +1 for t in THRESHOLDS}}
    delta_m_metrics = ("angle_mean", "angle_median", *(f"angle_within_{t:g}" for t in THRESHOLDS))
    options = (TaskOption("loss", "cosine", "cosine (1 - cos, LibMTL's) | l1 (of the unit prediction)",
                          choices=NORMALS_LOSSES, legacy="normals_loss"),)

    def __init__(self, loss: str = "cosine"):
        if loss not in NORMALS_LOSSES:
            raise ValueError(f"normals_loss must be one of {', '.join(NORMALS_LOSSES)}, got {loss!r}")
        self.loss = loss

    @classmethod
    def random_target(cls, info, shape, generator, device) -> torch.Tensor:
        """``(N, 3, H, W)`` random unit vectors."""
        n, h, w = shape
        v = torch.randn((n, 3, h, w), generator=generator, device=device)
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-6)

    @classmethod
    def output_channels(cls, num_classes: int) -> int:
        return 3

    @classmethod
    def flip_target(cls, target: torch.Tensor) -> torch.Tensor:
        """Mirror the map and negate x (channel 0); the zero vector stays zero."""
        out = target.flip(-1)
        return torch.cat([-out[:1], out[1:]], dim=0)

    @classmethod
    def for_run(cls, cfg, info, state=None) -> "NormalsTask":
        return cls(cls.option_values(cfg.task_options.get(cls.name, {}))["loss"])

    @property
    def channels(self) -> int:
        return 3

    def loss_for(self, target):
        fn = normals_cosine_loss if self.loss == "cosine" else normals_l1_loss
        return lambda p: fn(p, target)

    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        return unit(prediction)

    def meter(self) -> NormalsMeter:
        return NormalsMeter()

    def to_array(self, decoded: torch.Tensor) -> np.ndarray:
        """``(3, H, W)`` -> ``(H, W, 3)`` float32 unit vectors."""
        return decoded.permute(1, 2, 0).cpu().numpy().astype(np.float32)

    def picture(self, array: np.ndarray) -> np.ndarray:
        return encode_normals_png(array)

    def target_picture(self, target: torch.Tensor) -> np.ndarray:
        return encode_normals_png(target.permute(1, 2, 0).numpy())

    def save_raw(self, array: np.ndarray, out_dir: Path, stem: str) -> List[Path]:
        """``{stem}_normals.npy``: float32 ``(H, W, 3)`` unit vectors (x right, y down, z forward)."""
        path = Path(out_dir) / f"{stem}_normals.npy"
        np.save(path, array)
        return [path]

    def baseline(self, batches):
        """The mean valid validation normal (normalised) everywhere (``mean_normal``)."""
        total = torch.zeros(3, dtype=torch.float64)
        for batch in batches():
            t = batch["normals"].double()
            total += t.permute(1, 0, 2, 3)[:, valid_normals(batch["normals"])].sum(1)
        if float(total.norm()) == 0:  # no valid normal in the split
            return None
        mean = total / total.norm()
        meter = NormalsMeter()
        for batch in batches():
            t = batch["normals"]
            meter.update(mean.float().view(1, 3, 1, 1).expand_as(t), t)
        return "mean_normal", {"normal": [float(v) for v in mean], **meter.compute()}


TASK = NormalsTask
