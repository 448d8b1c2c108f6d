"""Which reader a dataset folder needs (``--dataset``), and its :class:`DatasetInfo`.

Kinds: ``synthetic`` and ``miniscapes`` (:mod:`fastmtl.data.folder`), ``nyuv2``
(:mod:`fastmtl.data.nyuv2`), ``cityscapes`` / ``cityscapes7`` / ``cityscapes19``
(:mod:`fastmtl.data.cityscapes`; the number picks the MTAN copy's label set, plain
``cityscapes`` takes the one present), and ``auto``, which looks at the folder:

1. ``meta.json`` saying ``"format": "fastmtl-synthetic"`` -> synthetic;
2. ``leftImg8bit/`` -> cityscapes (official layout);
3. ``train/`` (or ``val/``) with ``image/`` and ``normal/`` -> nyuv2;
4. ``train/`` (or ``val/``) with ``image/`` and ``label_7/`` or ``label_19/`` -> cityscapes;
5. anything else -> miniscapes (as before these readers existed).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from torch.utils.data import Dataset

from . import cityscapes, folder, nyuv2
from .info import DatasetInfo

KINDS = ("auto", "synthetic", "miniscapes", "nyuv2", "cityscapes", "cityscapes7", "cityscapes19")
_CITYSCAPES_CLASSES = {"cityscapes": None, "cityscapes7": 7, "cityscapes19": 19}


def resolve_kind(root, kind: str = "auto") -> str:
    """The kind of reader for ``root`` (``auto`` detected as in the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    root = folder.check_root(root)
    if kind in ("synthetic", "miniscapes"):
        return folder.resolve_kind(root, kind)
    if kind != "auto":
        return kind
    if folder.resolve_kind(root, "auto") == "synthetic":
        return "synthetic"
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    for split in (root / "train", root / "val"):
        if (split / "image").is_dir():
            if (split / "normal").is_dir():
                return "nyuv2"
            if (split / "label_7").is_dir() or (split / "label_19").is_dir():
                return "cityscapes"
    return "miniscapes"


def open_dataset(root, split: str, kind: str = "auto", transform: Optional[Callable[[dict], dict]] = None,
                 on_bad_sample: str = "error", tasks: Optional[Sequence[str]] = None) -> Dataset:
    """A split of ``root`` as a ``Dataset`` of sample dicts: ``rgb`` uint8 (3, H, W),
    ``semseg`` int64 (H, W) 255 ignore, ``depth`` float32 (1, H, W) metres NaN invalid,
    ``normals`` float32 (3, H, W) (nyuv2, and folders with ``normals/``; zero vector invalid),
    ``index`` int. Bad samples follow ``on_bad_sample`` (:mod:`fastmtl.data.bad_samples`).
    ``tasks``: the tasks a caller will use; without ``"normals"`` the normals files are neither
    listed nor read (None: every target the data has)."""
    kind = resolve_kind(root, kind)
    normals = tasks is None or "normals" in tasks
    if kind == "nyuv2":
        return nyuv2.open_nyuv2(root, split, transform, on_bad_sample, normals)
    if kind in _CITYSCAPES_CLASSES:
        return cityscapes.open_cityscapes(root, split, _CITYSCAPES_CLASSES[kind], transform, on_bad_sample)
    return folder.SegDepthFolder(root, split, transform, kind, on_bad_sample, normals)


def dataset_info(root, kind: str = "auto", on_bad_sample: str = "error") -> DatasetInfo:
    """Classes, colours, ignore value, depth range and statistics, and tasks of ``root``."""
    kind = resolve_kind(root, kind)
    if kind == "nyuv2":
        return nyuv2.nyuv2_info(root, on_bad_sample)
    if kind in _CITYSCAPES_CLASSES:
        return cityscapes.cityscapes_info(root, _CITYSCAPES_CLASSES[kind], on_bad_sample)
    return folder.dataset_info(root, kind, on_bad_sample)
