"""Surface-normal PNGs for the tests' own tiny MiniScapes-layout folders (tests/ is on sys.path)."""
import numpy as np


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
