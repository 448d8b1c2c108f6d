"""``fastmtl predict``: per image, the raw results (class-id PNG, depth in metres as .npy) and
pictures (colourised segmentation, depth colour map, side-by-side panel), all at the input's size.

Inputs are image files or ``.npy`` files holding a float ``(H, W, 3)`` RGB image in [0, 1]
(the ``image/`` folders of the NYUv2 and Cityscapes ``.npy`` copies; read as in training).
An input whose size is not a multiple of the model's is padded (edge pixels repeated) to the next
multiple and the outputs are cropped back, so nothing of the image is lost.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import load_checkpoint, model_from_checkpoint
from .data.classes import colorize
from .data.transforms import normalize_rgb
from .losses import last_prediction

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".npy")


def collect_images(inputs: Sequence[str]) -> List[Path]:
    """Image files named directly or found (non-recursively) in the given directories, sorted."""
    files: List[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"predict: no such image or directory: {p}")
    if not files:
        raise FileNotFoundError(f"predict: no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(inputs)}")
    return files


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


def load_image(path: Path) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of an image file or an ``.npy`` float image (see the module)."""
    if path.suffix.lower() == ".npy":
        from .data.npy import load_npy, rgb_from_image

        return rgb_from_image(load_npy(path, "image", None), path, None).transpose(1, 2, 0)
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except Exception as e:
        raise ValueError(f"predict: {path} is not a readable image ({e})") from None


def predict_image(model: torch.nn.Module, rgb: np.ndarray, normalizer, device="cpu"):
    """``rgb (H, W, 3) uint8`` -> ``(trainIds (H, W) uint8, depth (H, W) float32 metres)``.

    The image is padded at the bottom and right (edge pixels repeated) to a multiple of
    ``model.size_multiple`` and the predictions are cropped back to ``H x W``.
    """
    h, w = rgb.shape[:2]
    m = model.size_multiple
    x = normalize_rgb({"rgb": torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)})["rgb"][None]
    x = F.pad(x, (0, -w % m, 0, -h % m), mode="replicate")
    pred = model(x.to(device))
    labels = last_prediction(pred["semseg"])[0, :, :h, :w].argmax(0).to(torch.uint8).cpu().numpy()
    depth_m = normalizer.denormalize(last_prediction(pred["depth"]).float())[0, 0, :h, :w].cpu().numpy()
    return labels, depth_m.astype(np.float32)


@torch.no_grad()
def predict(checkpoint: str, inputs: Iterable[str], out_dir: str, device: str = "cpu") -> List[Path]:
    """Write per image to ``out_dir``: ``{name}_trainid.png`` (8-bit class ids of the
    checkpoint's dataset: Cityscapes trainIds, NYUv2's 13 classes...),
    ``{name}_depth.npy`` (float32 ``(H, W)`` metres), ``{name}_semseg.png`` (colours),
    ``{name}_depth.png`` (colour map) and ``{name}_panel.png`` (input | segmentation | depth)."""
    from .data import DepthNormalizer

    ckpt = load_checkpoint(checkpoint)
    model, _ = model_from_checkpoint(ckpt)
    model = model.to(device).eval()
    normalizer = DepthNormalizer.from_dict(ckpt["normalizer"])
    depth_range = ckpt["dataset"]["depth_range"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in collect_images(list(inputs)):
        rgb = load_image(path)
        labels, depth_m = predict_image(model, rgb, normalizer, device)
        seg_img, depth_img = colorize(labels, ckpt["dataset"]["colors"]), depth_colormap(depth_m, depth_range)
        panel = np.concatenate([rgb, seg_img, depth_img], axis=1)
        for suffix, img in (("trainid", labels), ("semseg", seg_img), ("depth", depth_img), ("panel", panel)):
            target = out / f"{path.stem}_{suffix}.png"
            Image.fromarray(img).save(target)
            written.append(target)
        np.save(out / f"{path.stem}_depth.npy", depth_m)
        written.append(out / f"{path.stem}_depth.npy")
    return written
