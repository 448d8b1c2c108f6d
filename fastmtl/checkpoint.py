"""Checkpoint files: atomic writes (temp file + fsync + rename) and safe loads (``weights_only=True``);
rebuilding a model or a run's tasks from one is :mod:`fastmtl.restore`.

A checkpoint is a dict of tensors and plain Python data only::

    {"format": "fastmtl-checkpoint", "version": 2, "config": Config.to_dict(),
     "outputs_desc": {"semseg": 19, "depth": 1, ...} (one entry per task), "dataset": DatasetInfo as dict,
     each task's saved state under its ``Task.state_key`` (depth: "normalizer": DepthNormalizer.to_dict()),
     "model": state_dict, "step": int, "epoch": int,
     "metrics": {...}, "best": {...} | None, plus resume state: "optimizer", "scheduler",
     "scaler", "rng"}
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, Union

import torch

from .files import write_atomic

FORMAT = "fastmtl-checkpoint"
VERSION = 2  # 2: config has dilation_style (version 1 models dilated the torchvision way)


def save_atomic(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save`` to ``path`` so that a crash at any moment leaves either the old file or the new
    one (:func:`fastmtl.files.write_atomic`); a failed write is one OSError naming the file and the
    free space."""
    path = Path(path)
    try:
        write_atomic(path, lambda f: torch.save(obj, f), binary=True)
    except (OSError, RuntimeError) as e:  # torch.save reports a short write (full disk) as RuntimeError
        raise OSError(f"could not write checkpoint {path}: {_first_line(e)} "
                      f"({_free_space(path.parent)}; the previous {path.name}, if any, is intact)") from e


def _message_lines(error: Exception) -> list:
    """The non-empty lines of an error's message, stripped (torch's errors span several)."""
    return [line.strip() for line in str(error).splitlines() if line.strip()]


def _first_line(error: Exception) -> str:
    lines = _message_lines(error)
    return lines[0] if lines else type(error).__name__


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free on its disk"
    except OSError:
        return "free space unknown"


def load_error_reason(error: Exception) -> str:
    """One line saying why ``torch.load(..., weights_only=True)`` failed."""
    lines = _message_lines(error)
    unsafe = [line for line in lines if "Unsupported global" in line]
    if unsafe:
        return f"refused by weights_only=True, it would run code: {unsafe[0][:160]}"
    if lines and lines[0].startswith("Weights only load failed"):
        return "not a torch.save file, or one holding objects that weights_only=True refuses"
    return f"not a torch.save file: {type(error).__name__}: {(lines[0] if lines else '')[:160]}"


def run_checkpoint(folder: Path) -> Path:
    """The checkpoint of run directory ``folder``: ``best.pt``, else (with a warning: the run has not
    been evaluated yet) ``last.pt``; neither is an error saying the run has not finished and what exists."""
    if (folder / "best.pt").is_file():
        return folder / "best.pt"
    if (folder / "last.pt").is_file():
        warnings.warn(f"{folder}: no best.pt (the run has not finished an evaluation yet); using its last.pt")
        return folder / "last.pt"
    held = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    what = f"it holds {', '.join(held[:5])}{' ...' if len(held) > 5 else ''}" if held else "it is empty"
    raise FileNotFoundError(f"--checkpoint {folder}: no best.pt or last.pt: the run there has not finished or "
                            f"saved a checkpoint yet ({what})")


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Load a fastmtl checkpoint on CPU with ``weights_only=True`` (a pickle that would run code is refused);
    a directory means its :func:`run_checkpoint`."""
    path = Path(path)
    if path.is_dir():
        path = run_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint: no such file: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"--checkpoint {path}: cannot be loaded ({load_error_reason(e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"--checkpoint {path}: not a fastmtl checkpoint (no format field {FORMAT!r})")
    return ckpt
