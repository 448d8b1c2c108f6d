"""Readers for the ``.npy``-per-sample copies the field uses (LibMTL / MTAN NYUv2, MTAN
Cityscapes): ``{root}/{split}/{image,<label>,depth[,normal]}/{i}.npy``.

Files are read with ``np.load(allow_pickle=False)``; every array is checked (rank, shape,
dtype, finite values, ranges) and converted to fastmtl's sample dict:

* ``rgb`` uint8 ``(3, H, W)`` from ``image`` float ``(H, W, 3)`` in [0, 1], as
  ``round(255 * x)`` (the 8-bit rounding changes a value by at most 1/510; uint8 images are
  taken as they are);
* ``semseg`` int64 ``(H, W)`` from ``label`` ``(H, W)`` (float or int, integral values
  ``0..C-1``, ``-1`` = void) with void -> 255 (fastmtl's ignore value);
* ``depth`` float32 ``(1, H, W)`` metres, NaN where invalid, from ``depth`` ``(H, W, 1)`` or
  ``(H, W)`` through the dataset's decoder (0 = invalid in both copies);
* ``normals`` (when the layout has ``normal``) float32 ``(3, H, W)`` from ``(H, W, 3)``:
  non-zero vectors rescaled to unit length, all-zero vectors kept as zero (= invalid);
* ``index`` int, the file index ``i``.
"""
from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch

from .bad_samples import BadSampleDataset, BadSampleError, check_policy
from .classes import IGNORE_INDEX
from .listing import Layout, complete_indices, list_split

VOID = -1  # the void label of the .npy copies
RGB_TOLERANCE = 1e-3  # float images may stray this far outside [0, 1] (resampling round-off)


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0,
                   (3, 0): np.lib.format.read_array_header_2_0}  # 3.0: 2.0 with a UTF-8 header


def check_npy_size(path: Path, sub: str, index: Optional[int]) -> None:
    """:class:`BadSampleError` when ``path``'s ``.npy`` header claims more data than the file holds
    (read before ``np.load`` allocates the array); files that are not ``.npy`` (an ``.npz``
    archive, garbage) are left to ``np.load``'s message."""
    with open(path, "rb") as f:
        if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            return
        f.seek(0)
        version = np.lib.format.read_magic(f)
        if version not in _HEADER_READERS:
            return
        shape, _, dtype = _HEADER_READERS[version](f)
        if dtype.hasobject:  # pickled objects: np.load(allow_pickle=False) refuses them
            return
        claimed = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        held = os.fstat(f.fileno()).st_size - f.tell()
    if claimed > held:
        raise BadSampleError(f"{sub}: the .npy header claims a {dtype} array of shape {shape} "
                             f"({claimed} bytes) but the file holds {held} bytes of data (truncated "
                             f"or corrupt)", path, index)


def load_npy(path: Path, sub: str, index: Optional[int]) -> np.ndarray:
    """The array in ``path`` (``allow_pickle=False``; its header's size checked against the file
    first), or :class:`BadSampleError`."""
    try:
        check_npy_size(path, sub, index)
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BadSampleError(f"{sub}: file not found", path, index) from None
    except (MemoryError, BadSampleError):
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise BadSampleError(f"{sub}: not a readable .npy array ({type(err).__name__}: {err})",
                             path, index) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise BadSampleError(f"{sub}: an .npz archive, expected one .npy array", path, index)
    return arr


def _need(cond: bool, sub: str, what: str, arr: np.ndarray, path: Path, index: Optional[int]):
    if not cond:
        raise BadSampleError(f"{sub}: expected {what}, got {arr.dtype} array of shape "
                             f"{arr.shape}", path, index)


def _finite(arr: np.ndarray, sub: str, path: Path, index: Optional[int]) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise BadSampleError(f"{sub}: {int(bad.sum())} value(s) are NaN or infinite", path, index)


def rgb_from_image(arr: np.ndarray, path: Path, index: Optional[int]) -> np.ndarray:
    """``(H, W, 3)`` float in [0, 1] (or uint8) -> uint8 ``(3, H, W)``."""
    _need(arr.ndim == 3 and arr.shape[2] == 3 and (arr.dtype.kind == "f" or arr.dtype == np.uint8),
          "image", "a float (H, W, 3) array in [0, 1] (or uint8)", arr, path, index)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
    _finite(arr, "image", path, index)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -RGB_TOLERANCE or hi > 1 + RGB_TOLERANCE:
        raise BadSampleError(f"image: values in [{lo:.4g}, {hi:.4g}], expected floats in [0, 1]",
                             path, index)
    rgb = np.rint(np.clip(arr.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def labels_from_npy(arr: np.ndarray, num_classes: int, sub: str, path: Path,
                    index: Optional[int]) -> np.ndarray:
    """``(H, W)`` class ids ``0..num_classes-1`` or -1 (void) -> int64 with void = 255."""
    _need(arr.ndim == 2 and arr.dtype.kind in "fiu", sub, "an (H, W) array of class ids", arr,
          path, index)
    if arr.dtype.kind == "f":
        _finite(arr, sub, path, index)
        if not np.array_equal(arr, np.round(arr)):
            raise BadSampleError(f"{sub}: non-integer label values", path, index)
    labels = arr.astype(np.int64)
    bad = (labels != VOID) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        values = np.unique(labels[bad])
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if values.size > 8 else "")
        raise BadSampleError(f"{sub}: {int(bad.sum())} pixel(s) with labels out of range ({shown}); "
                             f"expected 0..{num_classes - 1} or {VOID} (void)", path, index)
    return np.where(labels == VOID, IGNORE_INDEX, labels)


def depth_plane(arr: np.ndarray, path: Path, index: Optional[int]) -> np.ndarray:
    """``(H, W, 1)`` or ``(H, W)`` float, finite and >= 0 -> float64 ``(H, W)``."""
    _need(arr.dtype.kind == "f" and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1)),
          "depth", "a float (H, W, 1) array", arr, path, index)
    _finite(arr, "depth", path, index)
    plane = arr.reshape(arr.shape[:2]).astype(np.float64)
    if (plane < 0).any():
        raise BadSampleError(f"depth: {int((plane < 0).sum())} negative value(s); expected >= 0 "
                             f"(0 = invalid)", path, index)
    return plane


def metres_from_depth(plane: np.ndarray) -> np.ndarray:
    """NYUv2's depth decoder: metres as stored, 0 -> NaN."""
    return np.where(plane > 0, plane, np.nan).astype(np.float32)


def normals_from_npy(arr: np.ndarray, path: Path, index: Optional[int]) -> np.ndarray:
    """``(H, W, 3)`` -> float32 ``(3, H, W)``: unit vectors, all-zero vectors (invalid) kept."""
    _need(arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype.kind == "f", "normal",
          "a float (H, W, 3) array of normal vectors", arr, path, index)
    _finite(arr, "normal", path, index)
    n = arr.astype(np.float64)
    norm = np.sqrt((n * n).sum(-1, keepdims=True))
    unit = np.where(norm > 0, n / np.where(norm > 0, norm, 1.0), 0.0)
    return np.ascontiguousarray(unit.transpose(2, 0, 1)).astype(np.float32)


class NpySplit(BadSampleDataset):
    """One split of an ``.npy`` copy as a ``Dataset`` of sample dicts (see the module).

    Args:
        root, split: ``{root}/{split}/`` holds the subfolders.
        label_folder: the label subfolder (``label``, ``label_7``, ``label_19``).
        num_classes: labels must be ``0..num_classes-1`` or -1.
        depth_decoder: ``(H, W)`` float64 stored depth (>= 0) -> float32 metres, NaN invalid.
        with_normals: whether the layout has ``normal/`` (then samples hold ``normals``).
        transform, on_bad_sample: as for :class:`fastmtl.data.folder.SegDepthFolder`.

    Bad samples (:class:`BadSampleError`): unreadable/pickled/npz files, wrong rank, shape
    or dtype, NaN/inf values, image values outside [0, 1], labels out of range or not
    integral, negative depth, arrays whose (H, W) differ from the image's. Listing-time
    policy for incomplete samples as in ``SegDepthFolder``.
    """

    def __init__(self, root, split: str, label_folder: str, num_classes: int,
                 depth_decoder: Callable[[np.ndarray], np.ndarray], with_normals: bool,
                 transform: Optional[Callable[[dict], dict]] = None, on_bad_sample: str = "error"):
        self.root, self.split, self.transform = Path(root), split, transform
        self.on_bad_sample = check_policy(on_bad_sample)
        self.label_folder, self.num_classes = label_folder, num_classes
        self.depth_decoder, self.with_normals = depth_decoder, with_normals
        subs = ["image", label_folder, "depth"] + (["normal"] if with_normals else [])
        self.layout = Layout({sub: (".npy",) for sub in subs})
        files, wrong = list_split(self.root, split, self.layout)
        self.indices, self.incomplete = complete_indices(files, wrong, self.root / split,
                                                         self.layout, on_bad_sample)
        self._files = {sub: {i: files[sub][i][0] for i in self.indices} for sub in subs}

    def __len__(self) -> int:
        return len(self.indices)

    def paths(self, j: int) -> Dict[str, Path]:
        """``{subfolder: path}`` of sample ``j``."""
        i = self.indices[j]
        return {sub: self._files[sub][i] for sub in self.layout.subfolders}

    def load_depth(self, j: int) -> np.ndarray:
        """Depth of sample ``j`` alone: float32 metres ``(H, W)``, NaN invalid."""
        path = self.paths(j)["depth"]
        return self.depth_decoder(depth_plane(load_npy(path, "depth", self.indices[j]), path,
                                              self.indices[j]))

    def load(self, j: int) -> dict:
        """Sample ``j`` decoded and checked, before any transform; raises
        :class:`BadSampleError` for a bad sample whatever ``on_bad_sample`` is."""
        i = self.indices[j]
        paths = self.paths(j)
        raw = {sub: load_npy(path, sub, i) for sub, path in paths.items()}
        rgb = rgb_from_image(raw["image"], paths["image"], i)
        sample = {
            "rgb": rgb,
            "semseg": labels_from_npy(raw[self.label_folder], self.num_classes, self.label_folder,
                                      paths[self.label_folder], i),
            "depth": self.depth_decoder(depth_plane(raw["depth"], paths["depth"], i))[None],
        }
        if self.with_normals:
            sample["normals"] = normals_from_npy(raw["normal"], paths["normal"], i)
        for key, sub in (("semseg", self.label_folder), ("depth", "depth"), ("normals", "normal")):
            if key in sample and sample[key].shape[-2:] != rgb.shape[1:]:
                raise BadSampleError(f"{sub}: size (H, W) = {sample[key].shape[-2:]} differs from "
                                     f"image {paths['image'].name} {rgb.shape[1:]} (the arrays of a "
                                     f"sample must match)", paths[sub], i)
        out = {key: torch.from_numpy(np.ascontiguousarray(v)) for key, v in sample.items()}
        out["index"] = i
        return out
