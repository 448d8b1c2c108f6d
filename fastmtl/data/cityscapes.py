r"""Cityscapes, in the official layout or in the MTAN preprocessed ``.npy`` copy.

**Official** (``{root}/leftImg8bit`` exists), per ``{split}/{city}/{stem}``:

* ``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` 8-bit RGB;
* ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png`` labelIds 0..33, mapped to the 19
  trainIds of cityscapesScripts ``helpers/labels.py`` (:data:`LABEL_ID_TO_TRAIN_ID`;
  ids with trainId 255 and the value 255 -> 255 = ignore), or with 7 classes to the
  categories of those 19 (:data:`LABEL_ID_TO_CATEGORY`, as cityscapesScripts' category-level
  evaluation groups them: ignore-in-eval ids such as parking or caravan stay 255);
* ``disparity/{split}/{city}/{stem}_disparity.png`` 16-bit: ``d = (v - 1) / 256`` pixels for
  ``v > 0``, and ``camera/{split}/{city}/{stem}_camera.json`` with ``extrinsic.baseline``
  (m) and ``intrinsic.fx`` (px): ``depth = baseline * fx / d`` metres. ``v == 0`` (no
  disparity) and ``v == 1`` (d = 0, infinitely far) are invalid (NaN).

Sample ``index`` is the position of ``(city, stem)`` in the sorted list of the split's
samples; :meth:`CityscapesOfficial.paths` gives the files.

**MTAN copy** (``{root}/{train,val}/image`` exists): ``{split}/{image,label_7|label_19,depth}
/{i}.npy`` at 128x256: ``image`` float ``(H, W, 3)`` in [0, 1], labels ``(H, W)`` 0..C-1 with
-1 void, ``depth`` ``(H, W, 1)`` the stored disparity ``v``, 0 = invalid. MTAN's author calls
it the official disparity "without further processing" (lorenmt/mtan issues #15, #25); its
values (0..0.4922 = 32257 / 65536) are the 16-bit disparity PNG values / 65536, i.e.
``v = d / 256`` with ``d`` full-resolution pixels (an inference, see docs/datasets.md). fastmtl
converts it to metres with Cityscapes' typical camera: ``depth = 0.209313 m * 2262.52 px
/ (256 v)``. The 7 classes are Cityscapes' categories without void.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from .bad_samples import BadSampleDataset, BadSampleError, check_policy
from .classes import CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX
from ..files import loads_object
from .images import decode_image, read_labels, read_rgb
from .info import DatasetInfo, split_depth_stats
from .listing import Layout, check_split_name, complete_indices, inside
from .npy import NpySplit

# labelId -> trainId, cityscapesScripts helpers/labels.py (ids 0..33)
_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
              25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
NUM_LABEL_IDS = 34
LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.int64)
for _label_id, _train_id in _TRAIN_IDS.items():
    LABEL_ID_TO_TRAIN_ID[_label_id] = _train_id
LABEL_ID_TO_TRAIN_ID.flags.writeable = False

CATEGORY_NAMES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
CATEGORY_COLORS = ((128, 64, 128), (70, 70, 70), (153, 153, 153), (107, 142, 35), (70, 130, 180),
                   (220, 20, 60), (0, 0, 142))
# trainId -> category (labels.py categoryId - 1): road, sidewalk | building, wall, fence | pole,
# traffic light, traffic sign | vegetation, terrain | sky | person, rider | car ... bicycle
TRAIN_ID_TO_CATEGORY = (0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6)
_CATEGORY_OF_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.int64)
_CATEGORY_OF_TRAIN_ID[:len(TRAIN_ID_TO_CATEGORY)] = TRAIN_ID_TO_CATEGORY
LABEL_ID_TO_CATEGORY = _CATEGORY_OF_TRAIN_ID[LABEL_ID_TO_TRAIN_ID]  # ignored ids stay 255
LABEL_ID_TO_CATEGORY.flags.writeable = False
MTAN_BASELINE_M, MTAN_FX_PX = 0.209313, 2262.52  # Cityscapes' typical camera (camera/*.json)
DEPTH_RANGE = (3.0, 300.0)  # metres; d = 126 px (the largest 16-bit value, 32257) is ~3.8 m
TASKS = ("semseg", "depth")
DEPTH_STATS_MAPS = 100
OFFICIAL = "official"
MTAN = "mtan"

_SUFFIXES = {"leftImg8bit": "_leftImg8bit.png", "gtFine": "_gtFine_labelIds.png",
             "disparity": "_disparity.png", "camera": "_camera.json"}
_OFFICIAL_LAYOUT = Layout({sub: (suffix[suffix.rindex("."):],) for sub, suffix in _SUFFIXES.items()})
_DISPARITY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def disparity_to_depth(v: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """16-bit disparity PNG values -> float32 metres ``baseline * fx / ((v - 1) / 256)``;
    NaN where ``v <= 1`` (0: invalid, 1: zero disparity)."""
    d = (np.asarray(v, dtype=np.float64) - 1) / 256
    with np.errstate(divide="ignore"):
        return np.where(d > 0, baseline * fx / np.where(d > 0, d, 1.0), np.nan).astype(np.float32)


def mtan_disparity_to_depth(v: np.ndarray) -> np.ndarray:
    """MTAN's stored disparity ``v = d / 256`` -> float32 metres, NaN where ``v == 0``."""
    d = 256 * np.asarray(v, dtype=np.float64)
    return np.where(d > 0, MTAN_BASELINE_M * MTAN_FX_PX / np.where(d > 0, d, 1.0),
                    np.nan).astype(np.float32)


# --------------------------------------------------------------------------------------
# layout and class count
# --------------------------------------------------------------------------------------
def detect_layout(root) -> str:
    """``"official"`` (``leftImg8bit/`` in root), ``"mtan"`` (``train/image`` or
    ``val/image``), else a FileNotFoundError saying what was looked for."""
    root = Path(root)
    if (root / "leftImg8bit").is_dir():
        return OFFICIAL
    if any((root / split / "image").is_dir() for split in ("train", "val")):
        return MTAN
    raise FileNotFoundError(f"{root}: not a Cityscapes folder (no leftImg8bit/ for the official "
                            f"layout, no train/image/ or val/image/ for the MTAN .npy copy)")


def mtan_label_folder(root, classes: Optional[int] = None) -> str:
    """``label_7`` or ``label_19`` of an MTAN copy: ``classes`` when given, else the one of
    the two that ``train/`` (or ``val/``) has; both or neither is an error."""
    root = Path(root)
    if classes is not None:
        return f"label_{classes}"
    split = next((root / s for s in ("train", "val") if (root / s).is_dir()), root / "train")
    have = [name for name in ("label_7", "label_19") if (split / name).is_dir()]
    if len(have) != 1:
        found = "both label_7/ and label_19/" if have else "neither label_7/ nor label_19/"
        raise FileNotFoundError(f"{split}: {found}; choose the classes with --dataset "
                                f"cityscapes7 or cityscapes19")
    return have[0]


def _classes_of(root, classes: Optional[int]) -> Tuple[str, int]:
    """``(layout, number of classes)``; the official layout gives the 19 trainIds unless 7 are asked for."""
    layout = detect_layout(root)
    if layout == OFFICIAL:
        return layout, 19 if classes is None else classes
    return layout, int(mtan_label_folder(root, classes).split("_")[1])


# --------------------------------------------------------------------------------------
# the official layout
# --------------------------------------------------------------------------------------
def read_camera(path: Path, index: Optional[int]) -> Tuple[float, float]:
    """``(baseline m, fx px)`` of a Cityscapes camera json, or :class:`BadSampleError`."""
    try:
        cam = loads_object(path.read_text(encoding="utf-8"), "camera json")
        baseline, fx = cam["extrinsic"]["baseline"], cam["intrinsic"]["fx"]
    except OSError as err:
        raise BadSampleError(f"camera: cannot read ({err})", path, index) from None
    except (ValueError, KeyError, TypeError) as err:
        raise BadSampleError(f"camera: expected JSON with extrinsic.baseline and intrinsic.fx "
                             f"({type(err).__name__}: {err})", path, index) from None
    for name, value in (("extrinsic.baseline", baseline), ("intrinsic.fx", fx)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value > 0):
            raise BadSampleError(f"camera: {name} must be a finite number > 0, got {value!r}",
                                 path, index)
    return float(baseline), float(fx)


def _list_official(root: Path, split: str):
    """``(keys, files)``: sorted ``(city, stem)`` of every file of the split and
    ``{sub: {index: [path]}}``; the four split folders must exist inside the root."""
    check_split_name(split)
    root_resolved = root.resolve()
    names: Dict[str, Dict[Tuple[str, str], Path]] = {}
    for sub, suffix in _SUFFIXES.items():
        base = root / sub / split
        if not base.is_dir():
            raise FileNotFoundError(f"missing folder {base} (the official layout needs "
                                    f"{', '.join(f'{s}/{split}/' for s in _SUFFIXES)})")
        if not inside(base, root_resolved):
            raise ValueError(f"{base} resolves outside the dataset root {root}; refused")
        names[sub] = {}
        for city in sorted(p for p in base.iterdir() if p.is_dir()):
            for path in city.iterdir():
                if path.name.endswith(suffix) and len(path.name) > len(suffix):
                    if not inside(path, root_resolved):
                        raise BadSampleError("symlink resolves outside the dataset root "
                                             f"{root_resolved}; refused", path)
                    names[sub][(city.name, path.name[:-len(suffix)])] = path
    keys = sorted(set().union(*names.values()))
    if not keys:
        raise ValueError(f"no samples in {root / 'leftImg8bit' / split} (expected "
                         f"{{city}}/{{stem}}_leftImg8bit.png files)")
    index = {key: i for i, key in enumerate(keys)}
    files = {sub: {index[key]: [path] for key, path in found.items()} for sub, found in names.items()}
    return keys, files


class CityscapesOfficial(BadSampleDataset):
    """A split of the official Cityscapes layout (see the module) as sample dicts:
    ``rgb`` uint8 (3, H, W), ``semseg`` int64 trainIds, or categories when ``classes=7``
    (255 ignore), ``depth`` float32 (1, H, W) metres (NaN invalid), ``index``.

    Bad samples (:class:`BadSampleError`): unreadable/truncated PNGs, labelIds outside 0..33
    (other than 255), a disparity PNG that is not 16-bit grey, an unreadable camera json or one
    without a positive finite ``extrinsic.baseline`` / ``intrinsic.fx``, files of one sample
    with different sizes. A sample missing one of its four files is handled at listing time as
    in :class:`fastmtl.data.folder.SegDepthFolder` (error, or left out under ``"skip"``).
    """

    def __init__(self, root, split: str, transform: Optional[Callable[[dict], dict]] = None,
                 on_bad_sample: str = "error", classes: int = 19) -> None:
        if classes not in (7, 19):
            raise ValueError(f"Cityscapes has 19 classes or 7 categories, not {classes}")
        self.root, self.split, self.transform = Path(root), split, transform
        self.num_classes = classes
        self._label_map = LABEL_ID_TO_TRAIN_ID if classes == 19 else LABEL_ID_TO_CATEGORY
        self.on_bad_sample = check_policy(on_bad_sample)
        self.keys, files = _list_official(self.root, split)
        wrong = {sub: {} for sub in _SUFFIXES}

        def missing(sub: str, i: int):
            city, stem = self.keys[i]
            rel = f"{sub}/{split}/{city}/{stem}{_SUFFIXES[sub]}"
            return self.root / rel, rel
        self.indices, self.incomplete = complete_indices(files, wrong, self.root, _OFFICIAL_LAYOUT,
                                                         on_bad_sample, missing)
        self._files = {sub: {i: files[sub][i][0] for i in self.indices} for sub in _SUFFIXES}

    def __len__(self) -> int:
        return len(self.indices)

    def paths(self, j: int) -> Dict[str, Path]:
        """``{"leftImg8bit": path, "gtFine": path, "disparity": path, "camera": path}``."""
        i = self.indices[j]
        return {sub: self._files[sub][i] for sub in _SUFFIXES}

    def load_depth(self, j: int) -> np.ndarray:
        """Depth of sample ``j`` alone: float32 metres ``(H, W)``, NaN invalid."""
        i, paths = self.indices[j], self.paths(j)

        def to_array(img):
            if img.mode not in _DISPARITY_MODES:
                raise BadSampleError(f"disparity: expected a 16-bit grey PNG (mode I;16), got "
                                     f"mode {img.mode}", paths["disparity"], i)
            return np.array(img)
        raw = decode_image(paths["disparity"], "disparity", i, to_array)
        return disparity_to_depth(raw, *read_camera(paths["camera"], i))

    def load(self, j: int) -> dict:
        """Sample ``j`` decoded and checked, before any transform; raises
        :class:`BadSampleError` for a bad sample whatever ``on_bad_sample`` is."""
        i, paths = self.indices[j], self.paths(j)
        rgb = read_rgb(paths["leftImg8bit"], i, "leftImg8bit", ("PNG",))
        label_ids = read_labels(paths["gtFine"], i, NUM_LABEL_IDS, IGNORE_INDEX, "gtFine")
        depth = self.load_depth(j)
        for sub, arr in (("gtFine", label_ids), ("disparity", depth)):
            if arr.shape != rgb.shape[:2]:
                raise BadSampleError(f"{sub}: size (H, W) = {arr.shape} differs from "
                                     f"{paths['leftImg8bit'].name} {rgb.shape[:2]} (the files of a "
                                     f"sample must match)", paths[sub], i)
        return {
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),
            "semseg": torch.from_numpy(self._label_map[label_ids]),
            "depth": torch.from_numpy(depth[None]),
            "index": i,
        }


# --------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------
def open_cityscapes(root, split: str, classes: Optional[int] = None,
                    transform: Optional[Callable[[dict], dict]] = None, on_bad_sample: str = "error"):
    """A split of a Cityscapes folder, layout auto-detected (see the module); ``classes``
    (7 or 19; None: 19 for the official layout, the label folder present in the MTAN copy) picks
    the label set."""
    layout, num_classes = _classes_of(root, classes)
    if layout == OFFICIAL:
        return CityscapesOfficial(root, split, transform, on_bad_sample, num_classes)
    return NpySplit(root, split, f"label_{num_classes}", num_classes, mtan_disparity_to_depth, False,
                    transform, on_bad_sample)


def cityscapes_info(root, classes: Optional[int] = None, on_bad_sample: str = "error") -> DatasetInfo:
    """19 trainIds (or the 7 categories), depth range 3..300 m, tasks semseg + depth, and
    depth statistics of the first (lowest-index) up to 100 train depth maps."""
    _, num_classes = _classes_of(root, classes)
    names, colors = (CLASS_NAMES, CLASS_COLORS) if num_classes == 19 else (CATEGORY_NAMES, CATEGORY_COLORS)
    return DatasetInfo(
        num_classes=num_classes, class_names=names, colors=colors, ignore_index=IGNORE_INDEX,
        depth_range=DEPTH_RANGE, tasks=TASKS,
        depth_stats=_depth_stats(str(Path(root).resolve()), classes, check_policy(on_bad_sample)))


@functools.lru_cache(maxsize=8)
def _depth_stats(root: str, classes: Optional[int], on_bad_sample: str) -> Dict[str, float]:
    train = open_cityscapes(root, "train", classes, on_bad_sample=on_bad_sample)
    return split_depth_stats(train, DEPTH_STATS_MAPS, f"the first train depth maps of {root}")

