"""Constants of the synthetic renderer: class ids, primitive kinds, materials, sign shapes,
face codes and colour palettes (linear RGB)."""
from __future__ import annotations

from typing import Tuple

import numpy as np

GENERATOR_VERSION = 2  # 2: normals/ folder, about twice the poles, signs and traffic lights
FORMAT_NAME = "fastmtl-synthetic"
DEPTH_RANGE = (1.0, 250.0)
DEPTH_SCALE = 256.0
DEFAULT_SIZE = (128, 256)
DEFAULT_TRAIN = 2000
DEFAULT_VAL = 250
DEFAULT_SEED = 0
SPLITS = ("train", "val")
SUBFOLDERS = ("rgb", "semseg", "depth", "normals")
NORMALS_ENCODING = {"type": "uint8_rgb", "scale": 1 / 127.5, "offset": -1.0, "invalid": [0, 0, 0],
                    "frame": "camera: x right, y down, z forward"}

# Cityscapes trainIds used by the renderer.
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON = range(12)
CAR, TRUCK, BUS = 13, 14, 15

# Primitive kinds.
_PLANE, _BOX, _ELLIPSOID = 0, 1, 2
# Materials.
(_GROUND, _SIDEWALK, _FACADE, _METAL, _SIGNFACE, _TLIGHT, _FOLIAGE, _BARK, _PAINT, _CABIN,
 _TIRE, _CLOTH, _SKIN, _CONCRETE) = range(14)
# Alpha shapes (cut-outs evaluated on the hit point).
_SOLID, _CIRCLE, _TRIANGLE, _YIELD, _DIAMOND, _OCTAGON, _SLATS = range(7)
# Face codes: outward normal of the face that was hit; _CURVED = ellipsoid.
_FACE_NORMALS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float32)
_CURVED = 6
_NPARAM = 6


def lin(r: float, g: float, b: float) -> Tuple[float, float, float]:
    """sRGB 0..255 -> linear RGB 0..1."""
    return tuple((c / 255.0) ** 2.2 for c in (r, g, b))


def jitter(rng, color, amount=0.12):
    """``color`` with each channel scaled by a random factor in [1 - amount, 1 + amount]."""
    return tuple(float(c * rng.uniform(1 - amount, 1 + amount)) for c in color)


_FACADE_COLORS = [lin(*c) for c in (
    (200, 185, 160), (150, 150, 148), (222, 216, 204), (150, 82, 62), (208, 178, 112),
    (92, 92, 98), (120, 130, 142), (200, 152, 140), (172, 166, 156), (180, 120, 90),
    (110, 100, 90), (235, 230, 220))]
_PAINT_COLORS = [lin(*c) for c in (
    (235, 235, 235), (170, 172, 176), (25, 25, 28), (90, 92, 96), (160, 20, 20),
    (30, 60, 150), (20, 30, 70), (30, 90, 50), (220, 180, 30), (190, 170, 130),
    (120, 20, 30), (60, 120, 170))]
_FOLIAGE_COLORS = [lin(*c) for c in (
    (70, 110, 40), (50, 90, 35), (95, 120, 50), (60, 80, 40), (110, 130, 60), (40, 70, 45))]
# Traffic signs: shape, border colour, inner colour, symbol (0 none, 1 black, 2 white).
_SIGN_TYPES = [
    (_CIRCLE, lin(200, 20, 25), lin(240, 240, 240), 1),
    (_CIRCLE, lin(235, 235, 235), lin(20, 70, 170), 2),
    (_TRIANGLE, lin(200, 20, 25), lin(240, 240, 235), 1),
    (_YIELD, lin(200, 20, 25), lin(245, 245, 245), 0),
    (_DIAMOND, lin(240, 240, 240), lin(240, 190, 20), 0),
    (_OCTAGON, lin(240, 240, 240), lin(190, 15, 20), 2),
    (_SOLID, lin(235, 235, 235), lin(20, 70, 160), 2),
    (_SOLID, lin(235, 235, 235), lin(20, 110, 60), 2),
]
