"""``fastmtl predict``: per image and task, the raw result (semseg: class-id PNG; depth: metres as
.npy; normals: unit vectors as .npy) and a picture (colourised segmentation in the dataset's
colours, depth colour map, normals as RGB), plus a side-by-side panel, all at the input's size.

Inputs are image files or ``.npy`` files holding a float ``(H, W, 3)`` RGB image in [0, 1]
(the ``image/`` folders of the NYUv2 and Cityscapes ``.npy`` copies; read as in training).
An input whose size is not a multiple of the model's is padded (edge pixels repeated) to the next
multiple and the outputs are cropped back, so nothing of the image is lost.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import load_checkpoint
from .data.npy import load_npy, rgb_from_image
from .losses import last_prediction
from .restore import checkpoint_tasks, model_from_checkpoint
from .transforms import normalize_rgb

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


def check_distinct_outputs(files: Sequence[Path]) -> None:
    """ValueError naming the clashing inputs when two of ``files`` would write the same outputs
    (the outputs are named by the input's stem: ``a/x.png`` and ``b/x.png``, or ``x.png`` and ``x.jpg``)."""
    first: Dict[str, Path] = {}
    for f in files:
        if f.stem in first and first[f.stem].resolve() != f.resolve():
            raise ValueError(f"predict: inputs {first[f.stem]} and {f} would write the same outputs "
                             f"({f.stem}_*); predict them into separate --out folders or rename one")
        first.setdefault(f.stem, f)


def load_image(path: Path) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of an image file or an ``.npy`` float image (see the module)."""
    if path.suffix.lower() == ".npy":
        return rgb_from_image(load_npy(path, "image", None), path, None).transpose(1, 2, 0)
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except Exception as e:
        raise ValueError(f"predict: {path} is not a readable image ({e})") from None


def predict_tasks(model: torch.nn.Module, rgb: np.ndarray, tasks: Sequence, device="cpu") -> Dict[str, np.ndarray]:
    """``rgb (H, W, 3) uint8`` -> ``{task: raw result}`` (:meth:`fastmtl.tasks.Task.to_array`: semseg
    ``(H, W)`` uint8 ids, depth ``(H, W)`` float32 metres, normals ``(H, W, 3)`` float32).

    The image is padded at the bottom and right (edge pixels repeated) to a multiple of
    ``model.size_multiple`` and the predictions are cropped back to ``H x W``.
    """
    h, w = rgb.shape[:2]
    m = model.size_multiple
    x = normalize_rgb({"rgb": torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)})["rgb"][None]
    x = F.pad(x, (0, -w % m, 0, -h % m), mode="replicate")
    pred = model(x.to(device))
    return {t.name: t.to_array(t.decode(last_prediction(pred[t.name]))[0, :, :h, :w]) for t in tasks}


@torch.no_grad()
def predict(checkpoint: str, inputs: Iterable[str], out_dir: str, device: str = "cpu") -> List[Path]:
    """Write per image to ``out_dir``, for each task of the run: its raw result and picture
    (semseg: ``{name}_trainid.png`` 8-bit class ids of the checkpoint's dataset (Cityscapes trainIds,
    NYUv2's 13 classes...), ``{name}_semseg.png`` the dataset's colours; depth:
    ``{name}_depth.npy`` float32 ``(H, W)`` metres, ``{name}_depth.png`` colour map; normals:
    ``{name}_normals.npy`` float32 ``(H, W, 3)`` unit vectors, ``{name}_normals.png`` in the
    dataset encoding ``(n + 1) * 127.5``), and ``{name}_panel.png`` (input | each task's picture).
    Two inputs with one ``{name}`` are refused before anything is written (:func:`check_distinct_outputs`)."""
    files = list(dict.fromkeys(p.resolve() for p in collect_images(list(inputs))))  # one input named twice: once
    check_distinct_outputs(files)
    ckpt = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(ckpt)
    tasks = checkpoint_tasks(ckpt, cfg)
    model = model.to(device).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    for path in files:
        rgb = load_image(path)
        results = predict_tasks(model, rgb, tasks, device)
        pictures = [rgb]
        for task in tasks:
            written += task.save_raw(results[task.name], out, path.stem)
            picture = task.picture(results[task.name])
            Image.fromarray(picture).save(out / f"{path.stem}_{task.name}.png")
            written.append(out / f"{path.stem}_{task.name}.png")
            pictures.append(picture)
        Image.fromarray(np.concatenate(pictures, axis=1)).save(out / f"{path.stem}_panel.png")
        written.append(out / f"{path.stem}_panel.png")
    return written
