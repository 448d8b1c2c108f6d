"""What a model, loss and metric need to know about a dataset (:class:`DatasetInfo`), and the
depth statistics of a dataset's training maps."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, Tuple

import numpy as np

from .bad_samples import BadSampleError, BadSampleWarning

SEG_DEPTH = ("semseg", "depth")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model, loss and metric need to know about a dataset.

    ``depth_stats`` holds ``mean``, ``std`` (metres) and ``log_mean``, ``log_std`` (of
    natural-log depth) over valid training pixels. ``tasks`` are the sample keys with ground
    truth beside ``rgb``: ``("semseg", "depth")`` or ``("semseg", "depth", "normals")``.
    """

    num_classes: int
    class_names: Tuple[str, ...]
    colors: Tuple[Tuple[int, int, int], ...]
    ignore_index: int
    depth_range: Tuple[float, float]
    depth_stats: Dict[str, float]
    tasks: Tuple[str, ...] = SEG_DEPTH

    @classmethod
    def from_dict(cls, data: Dict) -> "DatasetInfo":
        """From ``dataclasses.asdict`` (a checkpoint's ``dataset``); fields it lacks keep their defaults."""
        fields = set(cls.__dataclass_fields__)
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in fields})


def depth_stats_of(maps: Iterable[np.ndarray], where: str) -> Dict[str, float]:
    """``mean``, ``std``, ``log_mean``, ``log_std`` (float64 sums) over the finite pixels of
    depth maps in metres (NaN invalid); a ValueError naming ``where`` when none is finite."""
    total = total_sq = log_total = log_sq = 0.0
    count = 0
    for depth in maps:
        d = np.asarray(depth, dtype=np.float64)
        d = d[np.isfinite(d)]
        ld = np.log(d)
        total, total_sq = total + d.sum(), total_sq + (d * d).sum()
        log_total, log_sq = log_total + ld.sum(), log_sq + (ld * ld).sum()
        count += d.size
    if count == 0:
        raise ValueError(f"no valid depth pixels in {where}")
    mean, log_mean = total / count, log_total / count
    return {"mean": float(mean), "std": float(math.sqrt(max(total_sq / count - mean * mean, 0.0))),
            "log_mean": float(log_mean),
            "log_std": float(math.sqrt(max(log_sq / count - log_mean * log_mean, 0.0)))}


def split_depth_stats(dataset, max_maps: int, where: str) -> Dict[str, float]:
    """:func:`depth_stats_of` over the first (lowest-index) ``max_maps`` good depth maps of a
    reader with ``load_depth(j)`` (metres ``(H, W)``, NaN invalid). Bad maps raise under
    ``on_bad_sample="error"`` and are passed over with a warning under ``"skip"``."""
    def maps():
        used = 0
        for j in range(len(dataset)):
            if used >= max_maps:
                return
            try:
                depth = dataset.load_depth(j)
            except BadSampleError as err:
                if dataset.on_bad_sample == "error":
                    raise
                warnings.warn(f"depth statistics skip sample {err.index}: {err}", BadSampleWarning,
                              stacklevel=4)
                continue
            used += 1
            yield depth
    return depth_stats_of(maps(), where)
