"""The 19 Cityscapes evaluation classes (trainIds 0..18), their colours and the ignore value.

Both MiniScapes and the built-in synthetic set label pixels with these trainIds; 255 marks
pixels that are not scored.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

IGNORE_INDEX = 255

CLASS_NAMES: Tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

CLASS_COLORS: Tuple[Tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

NUM_CLASSES = len(CLASS_NAMES)


def colorize(labels: np.ndarray, colors: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
    """Colours of a ``(H, W)`` integer label map as ``(H, W, 3)`` uint8: ``colors[i]`` for
    class ``i`` (default: the Cityscapes colours above).

    Ids outside ``0..len(colors)-1`` (the ignore value 255 included) are drawn black.
    """
    palette = CLASS_COLORS if colors is None else colors
    labels = np.asarray(labels)
    lut = np.zeros((len(palette) + 1, 3), dtype=np.uint8)
    lut[:len(palette)] = palette
    known = (labels >= 0) & (labels < len(palette))
    return lut[np.where(known, labels, len(palette))]
