"""The augmentations of a sample dict, each target by its task's rules (run in loader workers).

A sample is the dict every reader of :mod:`fastmtl.data` produces:
``rgb`` uint8 ``(3, H, W)`` and task targets under the task names (``semseg`` int64 ``(H, W)``,
255 = ignore; ``depth`` float32 ``(1, H, W)`` metres, NaN = invalid; ``normals`` float32
``(3, H, W)`` unit vectors, zero = invalid), plus pass-through keys such as ``index``. Targets are
transformed by their task's rules (:class:`fastmtl.tasks.Task`: ``resize_target``, ``pad_target``,
``flip_target``). The train
transform applies, in this fixed order: random scale, random crop (with padding), random
horizontal flip, colour jitter, then ImageNet normalisation, which turns ``rgb`` into float32
``(3, h, w)``. Random draws come from the ``generator`` argument (a ``torch.Generator``) or,
when it is None, from torch's global RNG, which the DataLoader seeds per worker.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import tasks


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _uniform(low: float, high: float, generator: Optional[torch.Generator]) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _targets(sample: dict):
    """``(key, Task class)`` of the sample's task targets (keys that name a registered task)."""
    return [(key, tasks.get(key)) for key in sample if tasks.is_task(key)]


def _size(sample: dict) -> Tuple[int, int]:
    h, w = sample["rgb"].shape[-2:]
    return int(h), int(w)


def random_scale(sample: dict, scale: Tuple[float, float],
                 generator: Optional[torch.Generator] = None) -> dict:
    """Resize by a factor drawn uniformly from ``scale``: bilinear for rgb (uint8 stays uint8), each
    target by its task's rule (nearest for semseg, depth and normals, so labels and invalid values are
    never blended; values unchanged)."""
    s = _uniform(scale[0], scale[1], generator)
    h, w = _size(sample)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    if size == (h, w):
        return sample
    out = dict(sample)
    rgb = F.interpolate(sample["rgb"][None].float(), size=size, mode="bilinear", align_corners=False)[0]
    out["rgb"] = rgb.round().clamp(0, 255).to(torch.uint8) if sample["rgb"].dtype == torch.uint8 else rgb
    for key, task in _targets(sample):
        out[key] = task.resize_target(sample[key], size)
    return out


def pad_to(sample: dict, size: Tuple[int, int]) -> dict:
    """Pad bottom/right to at least ``size = (h, w)``: rgb with 0, each target with its task's
    ``pad_value`` (semseg 255, depth NaN, normals the zero vector)."""
    h, w = _size(sample)
    ph, pw = max(0, size[0] - h), max(0, size[1] - w)
    if ph == 0 and pw == 0:
        return sample
    out = dict(sample)
    pad = (0, pw, 0, ph)
    out["rgb"] = F.pad(sample["rgb"], pad, value=0)
    for key, task in _targets(sample):
        out[key] = task.pad_target(sample[key], pad)
    return out


def crop(sample: dict, top: int, left: int, size: Tuple[int, int]) -> dict:
    """The window ``[top:top+h, left:left+w]`` of rgb and every target."""
    h, w = size
    out = dict(sample)
    for key in ["rgb"] + [key for key, _ in _targets(sample)]:
        out[key] = sample[key][..., top:top + h, left:left + w]
    return out


def random_crop(sample: dict, size: Tuple[int, int],
                generator: Optional[torch.Generator] = None) -> dict:
    """Crop a uniformly placed ``size = (h, w)`` window, padding first (see :func:`pad_to`)
    where the image is smaller."""
    sample = pad_to(sample, size)
    h, w = _size(sample)
    top = int(torch.randint(h - size[0] + 1, (), generator=generator))
    left = int(torch.randint(w - size[1] + 1, (), generator=generator))
    return crop(sample, top, left, size)


def random_hflip(sample: dict, p: float = 0.5, generator: Optional[torch.Generator] = None) -> dict:
    """Mirror rgb and every target left-right together with probability ``p`` (each target by its
    task's rule: normals also negate x)."""
    if float(torch.rand((), generator=generator)) >= p:
        return sample
    out = dict(sample)
    out["rgb"] = sample["rgb"].flip(-1)
    for key, task in _targets(sample):
        out[key] = task.flip_target(sample[key])
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
    h, w = _size(sample)
    size = (h - h % multiple, w - w % multiple)
    if size[0] == 0 or size[1] == 0:
        raise ValueError(f"image {h}x{w} is smaller than the crop multiple {multiple}")
    return crop(sample, 0, 0, size)


class TrainTransform:
    """Scale jitter -> random crop (pad) -> horizontal flip -> colour jitter -> normalise.

    ``__call__(sample, generator=None)`` returns rgb float32 ``(3, h, w)`` and the targets at
    ``(h, w) = crop_size`` (semseg int64 ``(h, w)``, depth float32 ``(1, h, w)``, ...).
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
