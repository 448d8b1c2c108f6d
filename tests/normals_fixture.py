"""Tiny MiniScapes-layout folders with surface normals for the task tests (tests/ is on sys.path)."""
import shutil

import numpy as np
from PIL import Image


def normals_png(h, w, seed, invalid_fraction=0.1):
    """A smooth field of unit normals (x right, y down, z forward) encoded as 8-bit RGB
    ``v = round((n + 1) * 127.5)``, with about ``invalid_fraction`` of the pixels (0, 0, 0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    a, b = rng.uniform(-2, 2, 2)
    n = np.stack([np.sin(a * xx + b * yy), np.cos(b * xx) * 0.5, -np.ones_like(xx)], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    v = np.clip(np.rint((n + 1) * 127.5), 0, 255).astype(np.uint8)
    v[rng.random((h, w)) < invalid_fraction] = 0
    return v


def add_normals(root, seed=0):
    """Write ``{split}/normals/{i}.png`` for every rgb file of every split of ``root``."""
    for split in sorted(p for p in root.iterdir() if p.is_dir()):
        (split / "normals").mkdir(exist_ok=True)
        for k, rgb in enumerate(sorted((split / "rgb").iterdir())):
            with Image.open(rgb) as im:
                w, h = im.size
            Image.fromarray(normals_png(h, w, seed + 1000 * k + len(split.name))).save(
                split / "normals" / f"{rgb.stem}.png")
    return root


def copy_with_normals(src, dst, seed=0):
    """A copy of the dataset ``src`` at ``dst`` with normals added."""
    shutil.copytree(src, dst)
    return add_normals(dst, seed)
