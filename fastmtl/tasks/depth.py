"""Monocular depth: one channel regressing normalised (optionally log) depth; losses L1 / L2 on the
normalised target or the scale-invariant log loss; SI-logRMSE, the KITTI/NYU extras and LibMTL's
abs/rel error.

Target ``sample["depth"]``: float32 ``(1, H, W)`` metres, NaN = invalid (padding is NaN). A flip
mirrors the map; rescaling is nearest-neighbour and leaves the values (metres) unchanged.

Losses: L1 and L2 are computed per image as the mean over valid (finite) pixels of the normalised
target, then averaged over the images that have at least one valid pixel (the template's L2; the
report's L1), so an image without valid depth contributes nothing and never a NaN.

Metrics (the SI-logRMSE of the course template's grader, docs/models.md; then the field's):

* SI-logRMSE: per image over valid ground-truth pixels (finite, > 0), predictions clamped to the
  dataset's depth range, both floored at :data:`DEPTH_FLOOR` m, ``d = log(gt) - log(pred)``,
  ``100 * sqrt(mean(d^2) - mean(d)^2)``; averaged over images with at least one valid pixel.
* KITTI/NYU extras over all valid pixels of the split: abs-rel, RMSE (m), delta < 1.25^k.
* LibMTL's (``examples/nyu/utils.py``): ``abs_err`` = mean ``|pred - gt|`` and ``rel_err`` = mean
  ``|pred - gt| / gt`` over all valid pixels of the split, predictions NOT clamped (its DepthMetric
  weights per-batch means by the batch's valid pixels: the pixel mean over the split).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from ..kernels.silog import silog
from ..losses import per_image_masked_mean
from ..nn.losses import SILogLoss
from .base import Task, TaskOption, add_finite_histogram

DEPTH_LOSSES = ("l1", "l2", "silog")
DEPTH_MODES = ("linear", "log")
DEPTH_FLOOR = 0.01
RANDOM_INVALID = 0.1  # share of the random targets of the performance tools without ground truth (NaN)


def depth_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean |pred - target| over finite targets, averaged over images."""
    valid = torch.isfinite(target)
    return per_image_masked_mean((pred.float() - torch.nan_to_num(target)).abs(), valid)


def depth_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean (pred - target)^2 over finite targets, averaged over images (the template's loss)."""
    valid = torch.isfinite(target)
    return per_image_masked_mean((pred.float() - torch.nan_to_num(target)) ** 2, valid)


@dataclass(frozen=True)
class DepthNormalizer:
    """Maps metres to the network's regression target and back.

    ``linear``: ``(d - mean) / std``; ``log``: ``(log d - mean) / std`` where ``mean``/``std``
    are then the statistics of natural-log depth. Works on tensors of any shape and device
    (run it on the batch, after transfer); NaN (invalid) stays NaN, and so does any depth
    that is not finite and > 0 (:meth:`normalize` never returns +-inf: no log of zero).
    """

    mode: str
    mean: float
    std: float

    def __post_init__(self) -> None:
        if self.mode not in DEPTH_MODES:
            raise ValueError(f"unknown depth normalisation {self.mode!r}; "
                             f"choose one of {', '.join(DEPTH_MODES)}")
        try:
            mean, std = float(self.mean), float(self.std)
        except (TypeError, ValueError):
            raise ValueError(f"depth mean/std must be numbers, got {self.mean!r}, {self.std!r}") from None
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"depth std must be a finite number > 0, got {self.std!r}")
        if not math.isfinite(mean):
            raise ValueError(f"depth mean must be a finite number, got {self.mean!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def from_stats(cls, mode: str, depth_stats: Mapping[str, float]) -> "DepthNormalizer":
        """Pick ``mean``/``std`` (linear) or ``log_mean``/``log_std`` (log) from dataset stats
        (:attr:`DatasetInfo.depth_stats` or meta.json's ``depth_stats``)."""
        if mode == "log":
            return cls(mode, depth_stats["log_mean"], depth_stats["log_std"])
        return cls(mode, depth_stats["mean"], depth_stats["std"])

    def normalize(self, depth_m: torch.Tensor) -> torch.Tensor:
        """Metres -> normalised target (same shape); NaN wherever ``depth_m`` is not finite
        and > 0 (invalid), and wherever the result would overflow to +-inf."""
        if not depth_m.is_floating_point():
            depth_m = depth_m.float()
        valid = torch.isfinite(depth_m) & (depth_m > 0)
        x = torch.where(valid, depth_m, torch.nan)
        x = x.log() if self.mode == "log" else x
        out = (x - self.mean) / self.std
        return torch.where(torch.isfinite(out), out, torch.nan)

    def denormalize(self, pred: torch.Tensor) -> torch.Tensor:
        """Normalised prediction -> metres (exact inverse of :meth:`normalize`)."""
        x = pred * self.std + self.mean
        return x.exp() if self.mode == "log" else x

    def to_log_depth(self, pred: torch.Tensor) -> torch.Tensor:
        """Normalised prediction -> natural-log depth (for the scale-invariant log loss);
        linear predictions are floored at 0.01 m before the log."""
        x = pred * self.std + self.mean
        return x if self.mode == "log" else x.clamp_min(0.01).log()

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> "DepthNormalizer":
        return cls(str(d["mode"]), float(d["mean"]), float(d["std"]))


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
    """Depth in metres through the run's :class:`DepthNormalizer` (its checkpoint state, key ``normalizer``).

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
    options = (TaskOption("loss", "l1", "l1 | l2 on the normalised target | silog (scale-invariant log loss)",
                          choices=DEPTH_LOSSES, legacy="depth_loss"),
               TaskOption("norm", "log", "linear | log: the normalisation of the regressed depth",
                          choices=DEPTH_MODES, legacy="depth_norm"))
    legacy_weight = "weight_depth"
    state_key = "normalizer"

    def __init__(self, normalizer, depth_range: Tuple[float, float] = (4.0, 300.0), loss: str = "l1",
                 silog_lambda: float = 0.85, mean_depth: float = float("nan")):
        if loss not in DEPTH_LOSSES:
            raise ValueError(f"depth loss must be one of {', '.join(DEPTH_LOSSES)}, got {loss!r}")
        if normalizer is None:
            raise ValueError("the depth task needs the run's DepthNormalizer")
        self.normalizer, self.depth_range, self.loss = normalizer, tuple(float(v) for v in depth_range), loss
        self.mean_depth = float(mean_depth)
        if loss == "silog":
            self.silog = SILogLoss(lam=silog_lambda, log_input=True)

    @classmethod
    def random_target(cls, info, shape, generator, device) -> torch.Tensor:
        """``(N, 1, H, W)`` metres uniform in ``info.depth_range``, :data:`RANDOM_INVALID` of them NaN."""
        n, h, w = shape
        lo, hi = info.depth_range
        depth = torch.rand((n, 1, h, w), generator=generator, device=device) * (hi - lo) + lo
        invalid = torch.rand(depth.shape, generator=generator, device=device) < RANDOM_INVALID
        return torch.where(invalid, math.nan, depth)

    @classmethod
    def output_channels(cls, num_classes: int) -> int:
        return 1

    @classmethod
    def for_run(cls, cfg, info, state=None) -> "DepthTask":
        """``state``: a saved :meth:`DepthNormalizer.to_dict`; None: the ``norm`` option over the dataset's stats."""
        options = cls.option_values(cfg.task_options.get(cls.name, {}))
        normalizer = (DepthNormalizer.from_dict(state) if state is not None
                      else DepthNormalizer.from_stats(options["norm"], info.depth_stats))
        return cls(normalizer, info.depth_range, options["loss"], mean_depth=float(info.depth_stats["mean"]))

    def state(self) -> Dict[str, object]:
        return self.normalizer.to_dict()

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
        add_finite_histogram(writer, "depth/target_normalized", self.normalizer.normalize(target[valid]), step)
        add_finite_histogram(writer, "depth/pred_normalized", raw, step)

    def target_picture(self, target: torch.Tensor) -> np.ndarray:
        return depth_colormap(target[0].numpy(), self.depth_range)

    def baseline(self, batches):
        """The train mean depth everywhere (``mean_depth``)."""
        meter = DepthMeter(self.depth_range)
        for batch in batches():
            meter.update(torch.full_like(batch["depth"], self.mean_depth), batch["depth"])
        return "mean_depth", {"depth_m": self.mean_depth, **meter.compute()}


TASK = DepthTask
