"""NYUv2 in the LibMTL / MTAN preprocessed ``.npy`` copy (795 train / 654 val at 288x384).

Layout ``{root}/{train,val}/{image,label,depth,normal}/{i}.npy`` (LibMTL
``examples/nyu/create_dataset.py``, MTAN ``im2im_pred/create_dataset.py``):

* ``image`` float ``(H, W, 3)`` RGB in [0, 1];
* ``label`` ``(H, W)`` (float or integer dtype) class ids 0..12 of the 13-class set, -1 = void;
* ``depth`` float ``(H, W, 1)`` metres, 0 = invalid;
* ``normal`` float ``(H, W, 3)`` unit surface normals, all-zero = invalid.

Samples (:class:`fastmtl.data.npy.NpySplit`): ``rgb``, ``semseg`` (void -> 255), ``depth``
(1, H, W) metres NaN invalid, ``normals`` (3, H, W), ``index``.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Optional

from .bad_samples import check_policy
from .classes import IGNORE_INDEX
from .info import DatasetInfo, split_depth_stats
from .npy import NpySplit, metres_from_depth

# The 13-class NYUv2 set (Couprie et al. 2013) in id order, "unknown" (id 0 there, -1 here) left out.
NYUV2_CLASS_NAMES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture",
                     "sofa", "table", "tv", "wall", "window")
# fastmtl's palette for them (the sources give none)
NYUV2_CLASS_COLORS = ((0, 0, 255), (232, 88, 47), (0, 217, 0), (148, 0, 240), (222, 241, 23),
                      (255, 205, 205), (0, 223, 228), (106, 135, 204), (116, 28, 41), (240, 35, 235),
                      (0, 166, 156), (249, 139, 0), (225, 228, 194))
NYUV2_DEPTH_RANGE = (0.1, 10.0)  # metres; the Kinect's range (evaluation clamps predictions to it)
NYUV2_TASKS = ("semseg", "depth", "normals")
DEPTH_STATS_MAPS = 100


def open_nyuv2(root, split: str, transform: Optional[Callable[[dict], dict]] = None,
               on_bad_sample: str = "error", normals: bool = True) -> NpySplit:
    """A split of the NYUv2 ``.npy`` copy (see the module); ``normals=False`` leaves ``normal/`` unread."""
    return NpySplit(root, split, "label", len(NYUV2_CLASS_NAMES), metres_from_depth, normals,
                    transform, on_bad_sample)


def nyuv2_info(root, on_bad_sample: str = "error") -> DatasetInfo:
    """The 13 classes, depth range 0.1..10 m, the three tasks, and depth statistics of the
    first (lowest-index) up to 100 train depth maps (bad ones per ``on_bad_sample``)."""
    return DatasetInfo(
        num_classes=len(NYUV2_CLASS_NAMES), class_names=NYUV2_CLASS_NAMES, colors=NYUV2_CLASS_COLORS,
        ignore_index=IGNORE_INDEX, depth_range=NYUV2_DEPTH_RANGE,
        depth_stats=_depth_stats(str(Path(root).resolve()), check_policy(on_bad_sample)),
        tasks=NYUV2_TASKS)


@functools.lru_cache(maxsize=8)
def _depth_stats(root: str, on_bad_sample: str):
    train = open_nyuv2(root, "train", on_bad_sample=on_bad_sample)
    return split_depth_stats(train, DEPTH_STATS_MAPS, f"the first train depth maps of {root}")
