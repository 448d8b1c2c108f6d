r"""Listing a split of numbered files: ``{root}/{split}/{subfolder}/{i}.{ext}``, one file per
subfolder and index (MiniScapes/synthetic PNG+JPG folders, the NYUv2 / Cityscapes ``.npy``
copies).

A :class:`Layout` names the subfolders and the extensions each accepts. File names never come
from anywhere but a directory listing (only ``<digits>.<png|jpg|jpeg|npy>`` names count), and
any dataset folder or file (symlink) resolving outside the data root is refused.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from .bad_samples import BadSampleError, BadSampleWarning

# ASCII digits only (``\d`` would accept other scripts' digits), fullmatch (``$`` would accept
# a trailing newline), at most 18 digits (int() of a huge digit string raises).
_FILE_NAME = re.compile(r"([0-9]{1,18})\.(png|jpg|jpeg|npy)", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True)
class Layout:
    """``extensions``: ``{subfolder: (".png", ...)}`` in the order the subfolders are checked."""

    extensions: Mapping[str, Tuple[str, ...]]

    @property
    def subfolders(self) -> Tuple[str, ...]:
        return tuple(self.extensions)


def inside(path: Path, root_resolved: Path) -> bool:
    """Whether ``path`` resolves to ``root_resolved`` or below it."""
    return path.resolve() == root_resolved or path.resolve().is_relative_to(root_resolved)


def _resolvable(path: Path) -> bool:
    """Whether ``path`` resolves: False for a symlink loop (which points nowhere, so not outside the
    root; the sample's reader then refuses the file by its path, as a bad sample)."""
    try:
        path.resolve()
    except (RuntimeError, OSError):  # RuntimeError up to Python 3.12, OSError (ELOOP) from 3.13
        return False
    return True


def check_split_name(split) -> None:
    if (not isinstance(split, str) or split in ("", ".", "..")
            or any(c in split for c in ("/", "\\", "\0", os.sep)) or Path(split).name != split):
        raise ValueError(f"split must be a plain folder name such as 'train' (no '/', '\\' or "
                         f"'..'), got {split!r}")


def list_folder(folder: Path, accepted: Tuple[str, ...], root_resolved: Path):
    """``({index: [paths]}, {index: [wrong-extension names]})`` of one subfolder.

    Only numbered names with an extension in ``accepted`` count; a matching entry that is a
    symlink resolving outside the root is an error (any policy); a symlink loop or an unreadable
    file is listed, and is a bad sample (named by its path, under ``--on-bad-sample``) when read."""
    found: Dict[int, List[Path]] = {}
    wrong_ext: Dict[int, List[str]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            m = _FILE_NAME.fullmatch(entry.name)
            if not m:
                continue
            i = int(m.group(1))
            if "." + m.group(2).lower() not in accepted:
                wrong_ext.setdefault(i, []).append(entry.name)
                continue
            path = folder / entry.name
            if entry.is_symlink() and _resolvable(path) and not inside(path, root_resolved):
                raise BadSampleError(f"symlink resolves outside the dataset root "
                                     f"{root_resolved} (to {path.resolve()}); refused", path, i)
            found.setdefault(i, []).append(path)
    return found, wrong_ext


def list_split(root: Path, split: str, layout: Layout):
    """``(files, wrong_ext)``: ``files = {subfolder: {index: [paths]}}`` of a split (usually
    one path per index; several are an ambiguity that :func:`complete_indices` reports) and
    ``wrong_ext = {subfolder: {index: [names]}}`` of numbered files with an extension the
    folder does not accept (``depth/5.jpg``), for messages. Runs the structural checks that
    are errors under any policy first: root, split and subfolders exist, nothing resolves
    outside the root, the split is not empty."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found (or not a folder): {root}")
    check_split_name(split)
    root_resolved = root.resolve()
    base = root / split
    if not base.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(f"split folder not found: {base} (found: {', '.join(have) or 'none'})")
    files: Dict[str, Dict[int, List[Path]]] = {}
    wrong: Dict[str, Dict[int, List[str]]] = {}
    for sub in layout.subfolders:
        folder = base / sub
        if not folder.is_dir():
            raise FileNotFoundError(f"missing folder {folder} (every split needs "
                                    f"{', '.join(layout.subfolders)})")
        if not inside(folder, root_resolved):
            raise ValueError(f"{folder} resolves outside the dataset root {root} "
                             f"(to {folder.resolve()}); refused")
        files[sub], wrong[sub] = list_folder(folder, layout.extensions[sub], root_resolved)
    if not any(files[sub] for sub in layout.subfolders):
        exts = sorted({e[1:] for sub in layout.subfolders for e in layout.extensions[sub]})
        raise ValueError(f"no samples in {base} (expected {{i}}.{'/'.join(exts)} files in "
                         f"{', '.join(s + '/' for s in layout.subfolders)}; names must match "
                         f"<digits>.{'|'.join(exts)})")
    return files, wrong


def complete_indices(files, wrong, base: Path, layout: Layout, on_bad_sample: str,
                     missing: Optional[Callable[[str, int], Tuple[Path, str]]] = None
                     ) -> Tuple[List[int], Dict[int, str]]:
    """Sorted indices with exactly one file in each subfolder, and ``{index: reason}`` of the
    others (a file missing from a sample, or two files for one index).

    ``missing(sub, i)`` gives ``(path, shown name)`` of the file that sample ``i`` lacks in
    ``sub`` (default ``base/sub/{i}.{ext}``, shown as ``sub/{i}.{ext}``).

    Listing-time policy: under ``"error"`` any such index raises :class:`BadSampleError`
    (naming the files); under ``"skip"`` those indices are left out of the dataset (so
    ``len()`` counts complete samples only) with one :class:`BadSampleWarning` listing them.
    """
    subfolders = layout.subfolders
    every = set()
    for sub in subfolders:
        every |= set(files[sub])
    problems: Dict[int, Tuple[Path, str]] = {}
    for i in sorted(every):
        for sub in subfolders:
            paths = files[sub].get(i, [])
            if len(paths) > 1:
                problems[i] = (paths[0], f"two files for index {i} in {base / sub}: "
                                         f"{', '.join(sorted(p.name for p in paths))}")
                break
            if not paths:
                exts = layout.extensions[sub]
                if missing is None:
                    name = f"{i}{exts[0]}" if len(exts) == 1 else f"{i}.{'|'.join(e[1:] for e in exts)}"
                    path, shown = base / sub / name, f"{sub}/{name}"
                else:
                    path, shown = missing(sub, i)
                hint = ""
                if i in wrong[sub]:
                    hint = (f" (found {', '.join(wrong[sub][i])}, but {sub} files must be "
                            f"{'/'.join(e[1:] for e in exts)})")
                have = [s for s in subfolders if files[s].get(i)]
                problems[i] = (path, f"missing file of sample {i}: {shown} not found but "
                                     f"{', '.join(have)} exist{hint}")
                break
    indices = sorted(every - set(problems))
    if problems:
        counts = {sub: len(files[sub]) for sub in subfolders}
        first = sorted(problems)
        detail = "; ".join(f"{problems[i][0]}: {problems[i][1]}" for i in first[:5])
        more = f"; and {len(first) - 5} more" if len(first) > 5 else ""
        msg = (f"mismatched samples in {base}: counts {counts}; indices not in every folder "
               f"exactly once: {first[:10]}{' ...' if len(first) > 10 else ''} ({detail}{more})")
        if on_bad_sample == "error":
            raise BadSampleError(msg, None, first[0])
        warnings.warn(f"skipping {len(first)} incomplete sample(s): {msg}", BadSampleWarning,
                      stacklevel=3)
        if not indices:
            raise ValueError(f"no complete samples in {base} (every index is incomplete or "
                             f"ambiguous; see the warning above)")
    return indices, {i: f"{p}: {r}" for i, (p, r) in problems.items()}
