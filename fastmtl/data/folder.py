r"""Readers for MiniScapes-layout folders: MiniScapes itself and the built-in synthetic set.

Layout: ``{root}/{split}/{rgb,semseg,depth}/{i}.{jpg|png}`` with integer ``i``; the sample
indices are the integers found by listing the folders (only names matching
``^[0-9]+\.(png|jpg|jpeg)$`` are considered; rgb may be JPG or PNG, semseg and depth must be
PNG). File names therefore never come from anywhere but a directory listing, and
:func:`fastmtl.data.listing.list_split` refuses any dataset folder or file (symlink) that
resolves outside the data root.

Both kinds give the same sample dict (before transforms):

* ``"rgb"``: uint8 ``(3, H, W)``;
* ``"semseg"``: int64 ``(H, W)`` Cityscapes trainIds, 255 = ignore;
* ``"depth"``: float32 ``(1, H, W)`` metres, NaN where invalid;
* ``"normals"`` (only when the split has a ``normals/`` folder): float32 ``(3, H, W)`` unit
  vectors in camera coordinates (x right, y down, z forward), the zero vector where invalid;
* ``"index"``: int, the file index ``i``.

Surface normals (optional ``{root}/{split}/normals/{i}.png``, written by the synthetic
generator): 8-bit RGB PNG, ``n = v / 127.5 - 1`` per channel then renormalised to unit length;
(0, 0, 0) = invalid. When the folder exists every sample of the split needs its normals file (as
for the other folders).

Encodings: MiniScapes stores rgb as JPG, semseg as PNG mode ``P`` or ``L`` and depth as an
8-bit PNG of quantised inverse depth (0 invalid,
``disp = (1/4 - 1/300) * (v - 1) / 254 + 1/300``, ``depth = 1 / disp``, 4..300 m). The
synthetic set (``meta.json`` with ``"format": "fastmtl-synthetic"``) stores depth as
described by its ``depth_encoding`` (uint16, ``depth = v * scale``, ``invalid`` value).

Bad input (see :class:`SegDepthFolder`, ``on_bad_sample``) never gives a silent wrong
sample: every file is fully decoded (``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is left False;
truncated PNG/JPG files are errors), and sizes, label ranges and decoded depth values are
checked. Accepted conversions (not errors): rgb in mode ``L``, ``LA``, ``1``, ``P``, ``PA``,
``RGBA``/``RGBX`` (alpha dropped, not composited), ``CMYK`` or ``YCbCr`` is converted to RGB;
semseg may be ``L``, ``P`` (the palette index is the label) or 16-bit ``I;16`` (values must
still be class ids or the ignore value).
"""
from __future__ import annotations

import functools
import math
import random
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .bad_samples import (
    BadSampleDataset,
    BadSampleError,
    BadSampleWarning,
    check_policy,
    collate_skip_bad,
)
from .classes import CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX
from ..files import loads_object
from .images import decode_image, read_labels, read_rgb
from .info import DatasetInfo
from .listing import Layout, check_split_name, complete_indices, inside, list_split

KINDS = ("auto", "synthetic", "miniscapes")
SUBFOLDERS = ("rgb", "semseg", "depth")
LAYOUT = Layout({"rgb": (".jpg", ".jpeg", ".png"), "semseg": (".png",), "depth": (".png",)})
NORMALS_LAYOUT = Layout({**LAYOUT.extensions, "normals": (".png",)})  # a split with normals/
NORMALS_MIN_LENGTH = 0.5  # a decoded non-(0,0,0) normals pixel shorter than this is not a normal
SYNTHETIC_FORMAT = "fastmtl-synthetic"
MINISCAPES_DEPTH_RANGE = (4.0, 300.0)
MINISCAPES_DEPTH_MEAN = 27.0727
MINISCAPES_DEPTH_STD = 29.1264
MINISCAPES_LOG_STATS_MAPS = 100
_MINISCAPES_DEPTH_MODES = ("L",)
_SYNTHETIC_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _decode_miniscapes_formula(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v).astype(np.float64)
    disp = (1 / 4 - 1 / 300) * (v - 1) / 254 + 1 / 300
    return np.where(v > 0, 1.0 / disp, np.nan).astype(np.float32)


_MINISCAPES_LUT = _decode_miniscapes_formula(np.arange(256))
_MINISCAPES_LUT.flags.writeable = False


def decode_miniscapes_depth(v: np.ndarray) -> np.ndarray:
    """MiniScapes 8-bit inverse depth ``(H, W)`` -> float32 metres, NaN where ``v == 0``
    (uint8 input goes through a 256-entry table of the same formula: identical values)."""
    v = np.asarray(v)
    if v.dtype == np.uint8:
        return _MINISCAPES_LUT[v]
    return _decode_miniscapes_formula(v)


def decode_scaled_depth(v: np.ndarray, scale: float, invalid: int = 0) -> np.ndarray:
    """Integer depth ``(H, W)`` -> float32 metres ``v * scale``, NaN where ``v == invalid``."""
    v = np.asarray(v)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is checked by the reader
        return np.where(v != invalid, v.astype(np.float64) * scale, np.nan).astype(np.float32)


# --------------------------------------------------------------------------------------
# meta.json
# --------------------------------------------------------------------------------------
def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def read_meta(root) -> Optional[dict]:
    """Parsed ``{root}/meta.json`` (plain JSON data only: no NaN/Infinity constants, no
    duplicate keys), or None when there is none. Errors name the file."""
    root = Path(root)
    path = root / "meta.json"
    if not path.is_file():
        return None
    if not inside(path, root.resolve()):
        raise ValueError(f"{path} resolves outside the dataset root {root} (symlink); refused")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    return loads_object(text, str(path), parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_synthetic_meta(meta: dict, path) -> dict:
    """Check a synthetic ``meta.json`` object field by field; returns the normalised fields
    (``classes``, ``colors``, ``ignore_index``, ``depth_encoding``, ``depth_range``,
    ``depth_stats``). A missing field or a wrong type is a ValueError naming ``path`` and
    the field (values are never coerced: ``"depth_range": "1,250"`` is an error)."""
    def bad(field, expected):
        shown = repr(meta[field]) if field in meta else "nothing (missing)"
        shown = shown if len(shown) < 80 else shown[:77] + "..."
        return ValueError(f"{path}: field {field!r} must be {expected}; got {shown}")

    classes = meta.get("classes")
    if (not isinstance(classes, list) or not 1 <= len(classes) <= IGNORE_INDEX
            or not all(isinstance(c, str) and c for c in classes)):
        raise bad("classes", f"a list of 1..{IGNORE_INDEX} non-empty class-name strings")
    colors = meta.get("colors")
    if (not isinstance(colors, list) or len(colors) != len(classes)
            or not all(isinstance(c, list) and len(c) == 3
                       and all(_is_int(v) and 0 <= v <= 255 for v in c) for c in colors)):
        raise bad("colors", f"a list of {len(classes)} [r, g, b] lists of ints 0..255 (one per class)")
    ignore = meta.get("ignore_index")
    if not _is_int(ignore) or ignore != IGNORE_INDEX:
        raise bad("ignore_index", f"the int {IGNORE_INDEX} (the ignore label fastmtl pads and "
                                  "masks with)")
    enc = meta.get("depth_encoding")
    if (not isinstance(enc, dict) or enc.get("type") != "uint16" or not _is_number(enc.get("scale"))
            or not enc["scale"] > 0
            or not (_is_int(enc.get("invalid", 0)) and 0 <= enc.get("invalid", 0) <= 65535)):
        raise bad("depth_encoding", 'an object {"type": "uint16", "scale": number > 0, '
                                    '"invalid": int 0..65535 (optional, default 0)}')
    rng = meta.get("depth_range")
    if (not isinstance(rng, list) or len(rng) != 2 or not all(_is_number(v) for v in rng)
            or not 0 < rng[0] < rng[1]):
        raise bad("depth_range", "a list [min, max] of finite numbers with 0 < min < max (metres)")
    stats = meta.get("depth_stats")
    keys = ("mean", "std", "log_mean", "log_std")
    if (not isinstance(stats, dict) or not all(_is_number(stats.get(k)) for k in keys)
            or not stats["std"] > 0 or not stats["log_std"] > 0):
        raise bad("depth_stats", 'an object with finite numbers "mean", "std" > 0, "log_mean", '
                                 '"log_std" > 0')
    return {
        "classes": tuple(classes), "colors": tuple(tuple(c) for c in colors),
        "ignore_index": ignore,
        "depth_encoding": {"type": "uint16", "scale": float(enc["scale"]),
                           "invalid": int(enc.get("invalid", 0))},
        "depth_range": (float(rng[0]), float(rng[1])),
        "depth_stats": {k: float(stats[k]) for k in keys},
    }


def _synthetic_meta(root: Path) -> dict:
    path = root / "meta.json"
    meta = read_meta(root)
    if meta is None:
        raise FileNotFoundError(f"{path} not found")
    return parse_synthetic_meta(meta, path)


def check_root(root) -> Path:
    """``root`` as a Path; FileNotFoundError unless it is a folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found (or not a folder): {root}")
    return root


def resolve_kind(root, kind: str = "auto") -> str:
    """``"synthetic"`` or ``"miniscapes"``; ``"auto"`` is synthetic iff meta.json says so."""
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    root = check_root(root)
    meta = read_meta(root)
    is_synthetic = meta is not None and meta.get("format") == SYNTHETIC_FORMAT
    if kind == "auto":
        return "synthetic" if is_synthetic else "miniscapes"
    if kind == "synthetic" and not is_synthetic:
        raise FileNotFoundError(
            f"{root / 'meta.json'} is missing or not a {SYNTHETIC_FORMAT!r} meta file")
    return kind


def dataset_info(root, kind: str = "auto", on_bad_sample: str = "error") -> DatasetInfo:
    """Classes, colours, ignore value, depth range and depth statistics of a dataset.

    Synthetic: everything from ``meta.json`` (checked by :func:`parse_synthetic_meta`).
    MiniScapes: the 19 Cityscapes classes, depth range (4, 300) m and the published mean
    27.0727 m / std 29.1264 m. MiniScapes log-depth statistics are not published, so
    ``log_mean``/``log_std`` are computed here, deterministically, from the valid pixels of
    the first (lowest-index) up to 100 depth maps of the ``train`` split. With
    ``on_bad_sample="skip"`` incomplete samples and unreadable/invalid depth maps are passed
    over (with a :class:`BadSampleWarning`) and the first 100 good maps are used; with
    ``"error"`` they raise :class:`BadSampleError`. ``tasks``: semseg and depth, plus normals
    when ``train/normals/`` exists.
    """
    root = Path(root)
    check_policy(on_bad_sample)
    if resolve_kind(root, kind) == "synthetic":
        meta = _synthetic_meta(root)
        return DatasetInfo(
            num_classes=len(meta["classes"]), class_names=meta["classes"], colors=meta["colors"],
            ignore_index=meta["ignore_index"], depth_range=meta["depth_range"],
            depth_stats=meta["depth_stats"], tasks=_folder_tasks(root))
    log_mean, log_std = _miniscapes_log_stats(str(root.resolve()), on_bad_sample)
    return DatasetInfo(
        num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, colors=CLASS_COLORS,
        ignore_index=IGNORE_INDEX, depth_range=MINISCAPES_DEPTH_RANGE,
        depth_stats={"mean": MINISCAPES_DEPTH_MEAN, "std": MINISCAPES_DEPTH_STD,
                     "log_mean": log_mean, "log_std": log_std}, tasks=_folder_tasks(root))


def split_layout(root: Path, split: str) -> Layout:
    """:data:`NORMALS_LAYOUT` when ``{root}/{split}/normals/`` exists, else :data:`LAYOUT`."""
    check_split_name(split)
    return NORMALS_LAYOUT if (Path(root) / split / "normals").is_dir() else LAYOUT


def _folder_tasks(root: Path) -> Tuple[str, ...]:
    """``("semseg", "depth")``, plus ``"normals"`` when the ``train`` split has a ``normals/`` folder."""
    return tuple(sub for sub in split_layout(root, "train").subfolders if sub != "rgb")


@functools.lru_cache(maxsize=8)
def _miniscapes_log_stats(root: str, on_bad_sample: str = "error") -> Tuple[float, float]:
    base = Path(root) / "train"
    files, wrong = list_split(Path(root), "train", LAYOUT)
    indices, _ = complete_indices(files, wrong, base, LAYOUT, on_bad_sample)
    total = total_sq = count = 0.0
    used = 0
    for i in indices:
        if used >= MINISCAPES_LOG_STATS_MAPS:
            break
        try:
            depth = _read_depth(files["depth"][i][0], None, i)
        except BadSampleError as err:
            if on_bad_sample == "error":
                raise
            warnings.warn(f"depth statistics skip sample {i}: {err}", BadSampleWarning, stacklevel=2)
            continue
        used += 1
        ld = np.log(depth[np.isfinite(depth)].astype(np.float64))
        total, total_sq, count = total + ld.sum(), total_sq + (ld * ld).sum(), count + ld.size
    if count == 0:
        raise ValueError(f"no valid depth pixels in the first train depth maps of {root}")
    mean = total / count
    return float(mean), float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))



def _read_depth(path: Path, synthetic: Optional[Tuple[float, int]], index: Optional[int]) -> np.ndarray:
    """Decoded depth (metres, NaN invalid). ``synthetic`` is ``(scale, invalid)`` for the
    uint16 encoding, None for MiniScapes 8-bit inverse depth. Raw "invalid" pixels (0 for
    MiniScapes) become NaN, which is normal; any other pixel must decode to a finite depth
    > 0."""
    modes = _SYNTHETIC_DEPTH_MODES if synthetic else _MINISCAPES_DEPTH_MODES

    def to_array(img):
        if img.mode not in modes:
            want = "16-bit grey PNG (mode I;16)" if synthetic else "8-bit grey PNG (mode L)"
            raise BadSampleError(f"depth: expected a {want}, got mode {img.mode}", path, index)
        return np.array(img)
    raw = decode_image(path, "depth", index, to_array)
    if synthetic:
        scale, invalid_value = synthetic
        depth = decode_scaled_depth(raw, scale, invalid_value)
        invalid = raw == invalid_value
    else:
        depth = decode_miniscapes_depth(raw)
        invalid = raw == 0
    ok = np.isfinite(depth) & (depth > 0)
    bad = ~(ok | invalid)
    if bad.any():
        vals = depth[bad]
        raise BadSampleError(
            f"depth: {int(bad.sum())} pixel(s) decode to invalid depth (negative or zero: "
            f"{int((vals <= 0).sum())}, NaN: {int(np.isnan(vals).sum())}, "
            f"inf: {int(np.isinf(vals).sum())}); depth must be finite and > 0", path, index)
    return depth


def decode_normals(v: np.ndarray) -> np.ndarray:
    """8-bit RGB normals ``(H, W, 3)`` -> float32 unit vectors: ``n = v / 127.5 - 1`` per channel,
    renormalised to length 1; a (0, 0, 0) pixel (invalid) -> the zero vector."""
    n = np.asarray(v).astype(np.float64) / 127.5 - 1.0
    length = np.sqrt((n * n).sum(-1, keepdims=True))
    invalid = ~np.asarray(v).any(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(invalid[..., None], 0.0, n / length)
    return n.astype(np.float32)


def _read_normals(path: Path, index: Optional[int]) -> np.ndarray:
    """Decoded normals ``(H, W, 3)`` (see :func:`decode_normals`). A pixel other than (0, 0, 0) whose
    decoded vector is shorter than :data:`NORMALS_MIN_LENGTH` (e.g. (128, 128, 128)) is an error:
    such a file does not hold the ``v = (n + 1) * 127.5`` encoding of unit vectors."""
    def to_array(img):
        if img.mode != "RGB":
            raise BadSampleError(f"normals: expected an 8-bit RGB PNG, got mode {img.mode}", path, index)
        return np.array(img)
    raw = decode_image(path, "normals", index, to_array)
    n = raw.astype(np.float64) / 127.5 - 1.0
    short = raw.any(-1) & (np.sqrt((n * n).sum(-1)) < NORMALS_MIN_LENGTH)
    if short.any():
        raise BadSampleError(
            f"normals: {int(short.sum())} pixel(s) decode to vectors shorter than {NORMALS_MIN_LENGTH} "
            f"(v / 127.5 - 1 must be about unit length; (0, 0, 0) marks invalid pixels)", path, index)
    return decode_normals(raw)


# --------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------
class SegDepthFolder(BadSampleDataset):
    """A split of a MiniScapes-layout folder as a torch ``Dataset`` of sample dicts.

    Args:
        root: dataset root (holds ``train/``, ``val/``, ... and, for synthetic, ``meta.json``).
        split: split folder name (a plain name: no ``/``, ``\\`` or ``..``).
        transform: callable on the sample dict (see :mod:`fastmtl.transforms`).
        kind: ``"auto"`` (synthetic iff meta.json says so), ``"synthetic"`` or ``"miniscapes"``.
        on_bad_sample: ``"error"`` (default) raises :class:`BadSampleError` (a ValueError
            naming the file and the problem) for a bad sample; ``"skip"`` makes
            ``dataset[j]`` return None instead, with a :class:`BadSampleWarning` once per
            file; use :func:`collate_skip_bad` as the loader's ``collate_fn``.
        normals: read a ``normals/`` folder when the split has one; False leaves it unlisted
            and unread (a run without the normals task).

    Sample (before transforms): ``rgb`` uint8 ``(3, H, W)``, ``semseg`` int64 ``(H, W)``
    (255 = ignore), ``depth`` float32 ``(1, H, W)`` metres with NaN where invalid, ``index``
    int (the file index). ``dataset[j]`` is the j-th smallest file index.

    Bad samples: a file that is not a (PNG, or for rgb JPG) image, truncated or corrupt;
    rgb/semseg/depth of different sizes; semseg labels outside ``0..num_classes-1`` other
    than the ignore value (also 16-bit labels > 255); depth pixels (other than the
    encoding's "invalid" value, which decodes to NaN as usual) that decode to a value that
    is not finite and > 0. A depth map with no valid pixel is *not* bad: it is an all-NaN map.

    Listing-time policy (decided when the dataset is built): an index whose triple is
    incomplete (e.g. ``rgb/5.jpg`` without ``depth/5.png``) or ambiguous (``rgb/5.jpg`` and
    ``rgb/5.png``) raises :class:`BadSampleError` under ``"error"``; under ``"skip"`` it is
    left out of ``indices`` (``len()`` counts complete samples), listed in
    :attr:`incomplete` and reported in one :class:`BadSampleWarning`. Structural problems
    are errors under both policies: missing root/split/subfolder (FileNotFoundError), an
    empty split, a bad split name, a folder or symlink resolving outside ``root``, or a
    malformed ``meta.json`` (ValueError).

    With DataLoader workers each worker holds its own copy, so "once per file" is per worker.
    """

    def __init__(self, root, split: str, transform: Optional[Callable[[dict], dict]] = None,
                 kind: str = "auto", on_bad_sample: str = "error", normals: bool = True) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.on_bad_sample = check_policy(on_bad_sample)
        self.kind = resolve_kind(self.root, kind)
        if self.kind == "synthetic":
            meta = _synthetic_meta(self.root)
            self.num_classes, self.ignore_index = len(meta["classes"]), meta["ignore_index"]
            enc = meta["depth_encoding"]
            self._depth_encoding: Optional[Tuple[float, int]] = (enc["scale"], enc["invalid"])
        else:
            self.num_classes, self.ignore_index = len(CLASS_NAMES), IGNORE_INDEX
            self._depth_encoding = None
        layout = split_layout(self.root, split) if normals else LAYOUT
        files, wrong = list_split(self.root, split, layout)
        self.indices, self.incomplete = complete_indices(files, wrong, self.root / split, layout,
                                                         on_bad_sample)
        self.subfolders: Tuple[str, ...] = layout.subfolders
        self._files: Dict[str, Dict[int, Path]] = {
            sub: {i: files[sub][i][0] for i in self.indices} for sub in self.subfolders}
        self._warned: set = set()

    def __len__(self) -> int:
        return len(self.indices)

    @functools.cached_property
    def info(self) -> DatasetInfo:
        """:func:`dataset_info` of the root (with this dataset's ``on_bad_sample``)."""
        return dataset_info(self.root, self.kind, self.on_bad_sample)

    @property
    def targets(self) -> Tuple[str, ...]:
        """The task targets this split gives: ``("semseg", "depth")`` plus ``"normals"`` when it has
        a ``normals/`` folder."""
        return tuple(sub for sub in self.subfolders if sub != "rgb")

    def paths(self, j: int) -> Dict[str, Path]:
        """``{"rgb": path, "semseg": path, "depth": path}`` (and ``"normals"``) of sample ``j``."""
        i = self.indices[j]
        return {sub: self._files[sub][i] for sub in self.subfolders}

    def load(self, j: int) -> dict:
        """Sample ``j`` decoded and checked, before any transform; raises
        :class:`BadSampleError` for a bad sample whatever ``on_bad_sample`` is."""
        i = self.indices[j]
        paths = self.paths(j)
        rgb = read_rgb(paths["rgb"], i)
        semseg = read_labels(paths["semseg"], i, self.num_classes, self.ignore_index)
        depth = _read_depth(paths["depth"], self._depth_encoding, i)
        arrays = {"semseg": semseg, "depth": depth}
        if "normals" in paths:
            arrays["normals"] = _read_normals(paths["normals"], i)
        for sub, arr in arrays.items():
            if arr.shape[:2] != rgb.shape[:2]:
                raise BadSampleError(
                    f"{sub}: size (H, W) = {arr.shape[:2]} differs from rgb {paths['rgb'].name} "
                    f"{rgb.shape[:2]} (rgb, {', '.join(arrays)} of a sample must match)",
                    paths[sub], i)
        sample = {
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),
            "semseg": torch.from_numpy(semseg),
            "depth": torch.from_numpy(depth[None]),
        }
        if "normals" in arrays:
            sample["normals"] = torch.from_numpy(np.ascontiguousarray(arrays["normals"].transpose(2, 0, 1)))
        sample["index"] = i
        return sample


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed
    (which the loader derives from its seeded generator), so every worker is reproducible."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(dataset: Dataset, batch_size: int, shuffle: bool, workers: int, seed: int,
                 drop_last: bool = False) -> DataLoader:
    """A reproducible ``DataLoader`` (used for evaluation; training batches come from
    :class:`fastmtl.data.order.ResumableBatchSampler`).

    The shuffle order comes from a generator seeded with ``seed``; worker processes get
    seeds derived from it, so the same seed and worker count give the same batches.
    ``pin_memory`` is on when CUDA is available and workers persist when ``workers > 0``.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate_skip_bad,
        pin_memory=torch.cuda.is_available(), drop_last=drop_last,
        persistent_workers=workers > 0, generator=generator,
        worker_init_fn=seed_worker if workers > 0 else None)
