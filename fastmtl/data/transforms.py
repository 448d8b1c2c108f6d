"""Sample transforms (run in loader workers) and depth normalisation (run on the batch).

A sample is the dict produced by :class:`fastmtl.data.folder.SegDepthFolder`:
``rgb`` uint8 ``(3, H, W)``, ``semseg`` int64 ``(H, W)`` (255 = ignore), ``depth`` float32
``(1, H, W)`` metres (NaN = invalid), optionally ``normals`` float32 ``(3, H, W)`` (unit
vectors, zero = invalid; NYUv2), plus pass-through keys such as ``index``. The train
transform applies, in this fixed order: random scale, random crop (with padding), random
horizontal flip, colour jitter, then ImageNet normalisation, which turns ``rgb`` into float32
``(3, h, w)``. Random draws come from the ``generator`` argument (a ``torch.Generator``) or,
when it is None, from torch's global RNG, which the DataLoader seeds per worker.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .classes import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEPTH_MODES = ("linear", "log")


def _uniform(low: float, high: float, generator: Optional[torch.Generator]) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_scale(sample: dict, scale: Tuple[float, float],
                 generator: Optional[torch.Generator] = None) -> dict:
    """Resize by a factor drawn uniformly from ``scale``: bilinear for rgb (uint8 stays uint8),
    nearest for semseg, depth and normals (so labels, NaNs and invalid normals are never
    blended)."""
    s = _uniform(scale[0], scale[1], generator)
    h, w = sample["semseg"].shape
    size = (max(1, round(h * s)), max(1, round(w * s)))
    if size == (h, w):
        return sample
    out = dict(sample)
    rgb = F.interpolate(sample["rgb"][None].float(), size=size, mode="bilinear", align_corners=False)[0]
    out["rgb"] = rgb.round().clamp(0, 255).to(torch.uint8) if sample["rgb"].dtype == torch.uint8 else rgb
    out["semseg"] = F.interpolate(sample["semseg"][None, None].float(), size=size,
                                  mode="nearest-exact")[0, 0].long()
    for key in ("depth", "normals"):
        if key in sample:
            out[key] = F.interpolate(sample[key][None], size=size, mode="nearest-exact")[0]
    return out


def pad_to(sample: dict, size: Tuple[int, int]) -> dict:
    """Pad bottom/right to at least ``size = (h, w)``: rgb with 0, semseg with 255, depth
    with NaN, normals with 0 (invalid)."""
    h, w = sample["semseg"].shape
    ph, pw = max(0, size[0] - h), max(0, size[1] - w)
    if ph == 0 and pw == 0:
        return sample
    out = dict(sample)
    pad = (0, pw, 0, ph)
    out["rgb"] = F.pad(sample["rgb"], pad, value=0)
    out["semseg"] = F.pad(sample["semseg"], pad, value=IGNORE_INDEX)
    out["depth"] = F.pad(sample["depth"], pad, value=math.nan)
    if "normals" in sample:
        out["normals"] = F.pad(sample["normals"], pad, value=0.0)
    return out


def crop(sample: dict, top: int, left: int, size: Tuple[int, int]) -> dict:
    """The window ``[top:top+h, left:left+w]`` of rgb, semseg, depth (and normals)."""
    h, w = size
    out = dict(sample)
    out["rgb"] = sample["rgb"][:, top:top + h, left:left + w]
    out["semseg"] = sample["semseg"][top:top + h, left:left + w]
    for key in ("depth", "normals"):
        if key in sample:
            out[key] = sample[key][:, top:top + h, left:left + w]
    return out


def random_crop(sample: dict, size: Tuple[int, int],
                generator: Optional[torch.Generator] = None) -> dict:
    """Crop a uniformly placed ``size = (h, w)`` window, padding first (see :func:`pad_to`)
    where the image is smaller."""
    sample = pad_to(sample, size)
    h, w = sample["semseg"].shape
    top = int(torch.randint(h - size[0] + 1, (), generator=generator))
    left = int(torch.randint(w - size[1] + 1, (), generator=generator))
    return crop(sample, top, left, size)


def random_hflip(sample: dict, p: float = 0.5, generator: Optional[torch.Generator] = None) -> dict:
    """Mirror rgb, semseg, depth and normals left-right together with probability ``p``; a
    mirrored normal's x component changes sign."""
    if float(torch.rand((), generator=generator)) >= p:
        return sample
    out = dict(sample)
    for key in ("rgb", "semseg", "depth", "normals"):
        if key in sample:
            out[key] = sample[key].flip(-1)
    if "normals" in sample:
        out["normals"] = out["normals"] * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
    return out


def _gray(rgb: torch.Tensor) -> torch.Tensor:
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None]


def color_jitter(sample: dict, strength: float, generator: Optional[torch.Generator] = None) -> dict:
    """Brightness, contrast, then saturation, each by a factor in ``1 ± strength``.

    Turns rgb into float32 in [0, 1] (uint8 input is divided by 255)."""
    rgb = _to_unit(sample["rgb"])
    b = _uniform(1 - strength, 1 + strength, generator)
    c = _uniform(1 - strength, 1 + strength, generator)
    s = _uniform(1 - strength, 1 + strength, generator)
    rgb = (rgb * b).clamp(0, 1)
    mean = _gray(rgb).mean()
    rgb = ((rgb - mean) * c + mean).clamp(0, 1)
    gray = _gray(rgb)
    rgb = ((rgb - gray) * s + gray).clamp(0, 1)
    return {**sample, "rgb": rgb}


def _to_unit(rgb: torch.Tensor) -> torch.Tensor:
    return rgb.float() / 255 if rgb.dtype == torch.uint8 else rgb.float()


def normalize_rgb(sample: dict) -> dict:
    """rgb (uint8 0..255 or float 0..1) -> float32 ``(3, H, W)`` with ImageNet mean/std."""
    rgb = _to_unit(sample["rgb"])
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return {**sample, "rgb": (rgb - mean) / std}


def crop_to_multiple(sample: dict, multiple: int) -> dict:
    """Crop the top-left ``(H - H % m, W - W % m)`` window (the template's validation crop)."""
    h, w = sample["semseg"].shape
    size = (h - h % multiple, w - w % multiple)
    if size[0] == 0 or size[1] == 0:
        raise ValueError(f"image {h}x{w} is smaller than the crop multiple {multiple}")
    return crop(sample, 0, 0, size)


class TrainTransform:
    """Scale jitter -> random crop (pad) -> horizontal flip -> colour jitter -> normalise.

    ``__call__(sample, generator=None)`` returns rgb float32 ``(3, h, w)``, semseg int64
    ``(h, w)``, depth float32 ``(1, h, w)`` with ``(h, w) = crop_size``.
    """

    def __init__(self, crop_size: Sequence[int], scale: Tuple[float, float] = (0.75, 1.25),
                 flip: bool = True, color_jitter: float = 0.2) -> None:
        self.crop_size = _pair(crop_size)
        self.scale = (float(scale[0]), float(scale[1]))
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        if not 0 <= color_jitter < 1:
            raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter!r}")
        self.flip = bool(flip)
        self.color_jitter = float(color_jitter)

    def __call__(self, sample: dict, generator: Optional[torch.Generator] = None) -> dict:
        if self.scale != (1.0, 1.0):
            sample = random_scale(sample, self.scale, generator)
        sample = random_crop(sample, self.crop_size, generator)
        if self.flip:
            sample = random_hflip(sample, 0.5, generator)
        if self.color_jitter > 0:
            sample = color_jitter(sample, self.color_jitter, generator)
        return normalize_rgb(sample)

    def __repr__(self) -> str:
        return (f"TrainTransform(crop_size={self.crop_size}, scale={self.scale}, flip={self.flip}, "
                f"color_jitter={self.color_jitter})")


class EvalTransform:
    """Deterministic: crop top-left to multiples of ``multiple`` per side, then normalise."""

    def __init__(self, multiple: int = 32) -> None:
        if int(multiple) < 1:
            raise ValueError(f"multiple must be >= 1, got {multiple!r}")
        self.multiple = int(multiple)

    def __call__(self, sample: dict) -> dict:
        return normalize_rgb(crop_to_multiple(sample, self.multiple))

    def __repr__(self) -> str:
        return f"EvalTransform(multiple={self.multiple})"


def _pair(size) -> Tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"crop size must be positive, got {size!r}")
    return h, w


def train_transform(crop_size, scale: Tuple[float, float] = (0.75, 1.25), flip: bool = True,
                    color_jitter: float = 0.2) -> TrainTransform:
    """The training transform; ``crop_size`` is an int or ``(h, w)``."""
    return TrainTransform(crop_size, scale, flip, color_jitter)


def eval_transform(multiple: int = 32) -> EvalTransform:
    """The validation/test transform (no randomness)."""
    return EvalTransform(multiple)


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
