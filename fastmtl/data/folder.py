"""Readers for MiniScapes-layout folders: MiniScapes itself and the built-in synthetic set.

Layout: ``{root}/{split}/{rgb,semseg,depth}/{i}.{jpg|png}`` with integer ``i``; the sample
indices are the integers found by listing the folders (only names of the form
``<digits>.<png|jpg|jpeg>`` are considered, so every path stays inside ``root``).

Both kinds give the same sample dict (before transforms):

* ``"rgb"``: uint8 ``(3, H, W)``;
* ``"semseg"``: int64 ``(H, W)`` Cityscapes trainIds, 255 = ignore;
* ``"depth"``: float32 ``(1, H, W)`` metres, NaN where invalid;
* ``"index"``: int, the file index ``i``.

Encodings: MiniScapes stores rgb as JPG, semseg as PNG mode ``P`` or ``L`` and depth as an
8-bit PNG of quantised inverse depth (0 invalid,
``disp = (1/4 - 1/300) * (v - 1) / 254 + 1/300``, ``depth = 1 / disp``, 4..300 m). The
synthetic set (``meta.json`` with ``"format": "fastmtl-synthetic"``) stores depth as
described by its ``depth_encoding`` (uint16, ``depth = v * scale``, ``invalid`` value).
"""
from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .classes import CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX

KINDS = ("auto", "synthetic", "miniscapes")
SUBFOLDERS = ("rgb", "semseg", "depth")
SYNTHETIC_FORMAT = "fastmtl-synthetic"
MINISCAPES_DEPTH_RANGE = (4.0, 300.0)
MINISCAPES_DEPTH_MEAN = 27.0727
MINISCAPES_DEPTH_STD = 29.1264
MINISCAPES_LOG_STATS_MAPS = 100

_FILE_NAME = re.compile(r"^(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)
_EXTENSIONS = {"rgb": (".jpg", ".jpeg", ".png"), "semseg": (".png",), "depth": (".png",)}


def decode_miniscapes_depth(v: np.ndarray) -> np.ndarray:
    """MiniScapes 8-bit inverse depth ``(H, W)`` -> float32 metres, NaN where ``v == 0``."""
    v = np.asarray(v).astype(np.float64)
    disp = (1 / 4 - 1 / 300) * (v - 1) / 254 + 1 / 300
    return np.where(v > 0, 1.0 / disp, np.nan).astype(np.float32)


def decode_scaled_depth(v: np.ndarray, scale: float, invalid: int = 0) -> np.ndarray:
    """Integer depth ``(H, W)`` -> float32 metres ``v * scale``, NaN where ``v == invalid``."""
    v = np.asarray(v)
    return np.where(v != invalid, v.astype(np.float64) * scale, np.nan).astype(np.float32)


def read_meta(root) -> Optional[dict]:
    """Parsed ``{root}/meta.json`` (plain JSON data), or None when there is none."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return meta


def resolve_kind(root, kind: str = "auto") -> str:
    """``"synthetic"`` or ``"miniscapes"``; ``"auto"`` is synthetic iff meta.json says so."""
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    meta = read_meta(root)
    is_synthetic = meta is not None and meta.get("format") == SYNTHETIC_FORMAT
    if kind == "auto":
        return "synthetic" if is_synthetic else "miniscapes"
    if kind == "synthetic" and not is_synthetic:
        raise FileNotFoundError(
            f"{root / 'meta.json'} is missing or not a {SYNTHETIC_FORMAT!r} meta file")
    return kind


@dataclass(frozen=True)
class DatasetInfo:
    """What a model, loss and metric need to know about a dataset.

    ``depth_stats`` holds ``mean``, ``std`` (metres) and ``log_mean``, ``log_std`` (of
    natural-log depth) over valid training pixels.
    """

    num_classes: int
    class_names: Tuple[str, ...]
    colors: Tuple[Tuple[int, int, int], ...]
    ignore_index: int
    depth_range: Tuple[float, float]
    depth_stats: Dict[str, float]


def dataset_info(root, kind: str = "auto") -> DatasetInfo:
    """Classes, colours, ignore value, depth range and depth statistics of a dataset.

    Synthetic: everything from ``meta.json``. MiniScapes: the 19 Cityscapes classes, depth
    range (4, 300) m and the published mean 27.0727 m / std 29.1264 m. MiniScapes log-depth
    statistics are not published, so ``log_mean``/``log_std`` are computed here,
    deterministically, from the valid pixels of the first (lowest-index) up to 100 depth maps
    of the ``train`` split.
    """
    root = Path(root)
    if resolve_kind(root, kind) == "synthetic":
        meta = read_meta(root)
        try:
            return DatasetInfo(
                num_classes=len(meta["classes"]), class_names=tuple(meta["classes"]),
                colors=tuple(tuple(int(v) for v in c) for c in meta["colors"]),
                ignore_index=int(meta["ignore_index"]),
                depth_range=(float(meta["depth_range"][0]), float(meta["depth_range"][1])),
                depth_stats={k: float(meta["depth_stats"][k])
                             for k in ("mean", "std", "log_mean", "log_std")})
        except (KeyError, TypeError, IndexError, ValueError) as err:
            raise ValueError(f"{root / 'meta.json'}: missing or malformed field ({err!r})") from None
    log_mean, log_std = _miniscapes_log_stats(str(root.resolve()))
    return DatasetInfo(
        num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, colors=CLASS_COLORS,
        ignore_index=IGNORE_INDEX, depth_range=MINISCAPES_DEPTH_RANGE,
        depth_stats={"mean": MINISCAPES_DEPTH_MEAN, "std": MINISCAPES_DEPTH_STD,
                     "log_mean": log_mean, "log_std": log_std})


@functools.lru_cache(maxsize=8)
def _miniscapes_log_stats(root: str) -> Tuple[float, float]:
    files = _list_split(Path(root), "train")["depth"]
    total = total_sq = count = 0.0
    for i in sorted(files)[:MINISCAPES_LOG_STATS_MAPS]:
        depth = decode_miniscapes_depth(_read_gray(files[i], ("L",)))
        ld = np.log(depth[np.isfinite(depth)].astype(np.float64))
        total, total_sq, count = total + ld.sum(), total_sq + (ld * ld).sum(), count + ld.size
    if count == 0:
        raise ValueError(f"no valid depth pixels in the first train depth maps of {root}")
    mean = total / count
    return float(mean), float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))


def _list_folder(folder: Path, extensions) -> Dict[int, Path]:
    found: Dict[int, Path] = {}
    for path in folder.iterdir():
        m = _FILE_NAME.match(path.name)
        if not m or path.suffix.lower() not in extensions:
            continue
        i = int(m.group(1))
        if i in found:
            raise ValueError(f"two files for index {i} in {folder}: {found[i].name}, {path.name}")
        found[i] = folder / path.name
    return found


def _list_split(root: Path, split: str) -> Dict[str, Dict[int, Path]]:
    """``{subfolder: {index: path}}`` of a split, with all consistency checks."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    if split in ("", ".", "..") or Path(split).name != split or "\\" in split:
        raise ValueError(f"split must be a plain folder name such as 'train', got {split!r}")
    base = root / split
    if not base.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(f"split folder not found: {base} (found: {', '.join(have) or 'none'})")
    files = {}
    for sub in SUBFOLDERS:
        folder = base / sub
        if not folder.is_dir():
            raise FileNotFoundError(f"missing folder {folder}")
        files[sub] = _list_folder(folder, _EXTENSIONS[sub])
    counts = {sub: len(f) for sub, f in files.items()}
    if not any(counts.values()):
        raise ValueError(f"no samples in {base} (expected {{i}}.jpg/png files in rgb/, semseg/, depth/)")
    ref = set(files["rgb"])
    for sub in SUBFOLDERS[1:]:
        if set(files[sub]) != ref:
            missing = sorted(ref ^ set(files[sub]))[:5]
            raise ValueError(f"mismatched samples in {base}: counts {counts}; indices not in every "
                             f"folder: {missing}")
    return files


def _read_gray(path: Path, modes) -> np.ndarray:
    with Image.open(path) as img:
        if img.mode not in modes:
            raise ValueError(f"{path}: expected PNG mode {' or '.join(modes)}, got {img.mode}")
        return np.array(img)


class SegDepthFolder(Dataset):
    """A split of a MiniScapes-layout folder as a torch ``Dataset`` of sample dicts.

    Args:
        root: dataset root (holds ``train/``, ``val/``, ... and, for synthetic, ``meta.json``).
        split: split folder name.
        transform: callable on the sample dict (see :mod:`fastmtl.data.transforms`).
        kind: ``"auto"`` (synthetic iff meta.json says so), ``"synthetic"`` or ``"miniscapes"``.

    Sample (before transforms): ``rgb`` uint8 ``(3, H, W)``, ``semseg`` int64 ``(H, W)``
    (255 = ignore), ``depth`` float32 ``(1, H, W)`` metres with NaN where invalid, ``index``
    int (the file index). ``dataset[j]`` is the j-th smallest file index.
    """

    def __init__(self, root, split: str, transform: Optional[Callable[[dict], dict]] = None,
                 kind: str = "auto") -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.kind = resolve_kind(self.root, kind)
        files = _list_split(self.root, split)
        self.indices: List[int] = sorted(files["rgb"])
        self._files = files
        if self.kind == "synthetic":
            enc = read_meta(self.root).get("depth_encoding", {})
            if enc.get("type") != "uint16" or not isinstance(enc.get("scale"), (int, float)):
                raise ValueError(f"{self.root / 'meta.json'}: unsupported depth_encoding {enc!r}")
            self._scale, self._invalid = float(enc["scale"]), int(enc.get("invalid", 0))

    def __len__(self) -> int:
        return len(self.indices)

    @functools.cached_property
    def info(self) -> DatasetInfo:
        """:func:`dataset_info` of the root."""
        return dataset_info(self.root, self.kind)

    def load(self, j: int) -> dict:
        """Sample ``j`` decoded from disk, before any transform."""
        i = self.indices[j]
        paths = {sub: self._files[sub][i] for sub in SUBFOLDERS}
        with Image.open(paths["rgb"]) as img:
            rgb = np.array(img.convert("RGB"))
        semseg = _read_gray(paths["semseg"], ("L", "P"))
        if self.kind == "synthetic":
            raw = _read_gray(paths["depth"], ("I;16", "I"))
            depth = decode_scaled_depth(raw, self._scale, self._invalid)
        else:
            depth = decode_miniscapes_depth(_read_gray(paths["depth"], ("L",)))
        if not rgb.shape[:2] == semseg.shape == depth.shape:
            raise ValueError(f"sample {i} of {self.root / self.split}: sizes differ "
                             f"(rgb {rgb.shape[:2]}, semseg {semseg.shape}, depth {depth.shape})")
        return {
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),
            "semseg": torch.from_numpy(semseg.astype(np.int64)),
            "depth": torch.from_numpy(depth[None]),
            "index": i,
        }

    def __getitem__(self, j: int) -> dict:
        sample = self.load(j)
        return self.transform(sample) if self.transform is not None else sample


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed
    (which the loader derives from its seeded generator), so every worker is reproducible."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(dataset: Dataset, batch_size: int, shuffle: bool, workers: int, seed: int,
                 drop_last: bool = False) -> DataLoader:
    """A reproducible ``DataLoader`` (used for evaluation; training batches come from
    :class:`fastmtl.train.ResumableBatchSampler`).

    The shuffle order comes from a generator seeded with ``seed``; worker processes get
    seeds derived from it, so the same seed and worker count give the same batches.
    ``pin_memory`` is on when CUDA is available and workers persist when ``workers > 0``.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        pin_memory=torch.cuda.is_available(), drop_last=drop_last,
        persistent_workers=workers > 0, generator=generator,
        worker_init_fn=seed_worker if workers > 0 else None)
