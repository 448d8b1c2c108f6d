"""The :class:`Task` interface: everything fastmtl needs to know about one dense-prediction task.

A task is one module in :mod:`fastmtl.tasks` defining a :class:`Task` subclass and ``TASK = ThatClass``.
The class-level part (name, augmentation rules, metric directions, output channels) works without a
run, so the data transforms (in loader workers), ``fastmtl compare`` and ``fastmtl profile`` use it
directly; an instance (built by :meth:`Task.for_run` from the run's config, the dataset's info and
the depth normaliser) carries the options that loss, metrics, visualisation and outputs need.

Shapes: a batch prediction is the model's raw output ``(N, C, H, W)`` for the task (the last element
of a deep-supervision list is the one evaluated); a target is the sample dict's ``sample[name]``
collated, ``(N, H, W)`` or ``(N, C, H, W)``; per-image arrays in :meth:`Task.to_array` are numpy,
height and width first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


class Task:
    """One task. Subclasses set the class attributes and implement the methods that raise here.

    Class attributes:
        name: the task's name, its key in the model's outputs and in the sample dict.
        label: a short human name of the headline metric (log lines).
        pad_value: the target's value in padding (an "ignore"/"invalid" value).
        headline: the metric in ``summary.json``'s ``best``/``final``; it enters the run's score
            ``multitask`` with the sign of ``metric_directions[headline]``.
        metric_directions: ``{metric: +1 (higher is better) or -1 (lower is better)}`` of every
            scalar metric the task's meter computes.
        delta_m_metrics: the metrics ``fastmtl compare`` averages into Δm (LibMTL's set where the
            field has one).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    pad_value: ClassVar[float]
    headline: ClassVar[str]
    metric_directions: ClassVar[Dict[str, int]]
    delta_m_metrics: ClassVar[Tuple[str, ...]]

    # -- class level: no run needed --------------------------------------------------------

    @classmethod
    def output_channels(cls, num_classes: int) -> int:
        """Channels of the task's head, given the dataset's number of semantic classes."""
        raise NotImplementedError

    @classmethod
    def flip_target(cls, target: torch.Tensor) -> torch.Tensor:
        """The target of the left-right mirrored image (``(..., H, W)``); default: mirror the map."""
        return target.flip(-1)

    @classmethod
    def resize_target(cls, target: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """``(H, W)`` or ``(C, H, W)`` -> ``size``, nearest neighbour (labels and invalid values are
        never blended), values unchanged, dtype kept."""
        x = target[None] if target.dim() == 3 else target[None, None]
        y = F.interpolate(x.float(), size=size, mode="nearest-exact")
        return (y[0] if target.dim() == 3 else y[0, 0]).to(target.dtype)

    @classmethod
    def pad_target(cls, target: torch.Tensor, pad: Tuple[int, int, int, int]) -> torch.Tensor:
        """Pad the last two dims by ``pad`` (F.pad order: left, right, top, bottom) with ``pad_value``."""
        return F.pad(target, pad, value=cls.pad_value)

    # -- a run's task ----------------------------------------------------------------------

    @classmethod
    def for_run(cls, cfg, info, normalizer) -> "Task":
        """The task with the run's options: ``cfg`` a :class:`~fastmtl.config.Config`, ``info`` the
        :class:`~fastmtl.data.DatasetInfo`, ``normalizer`` the run's :class:`~fastmtl.data.DepthNormalizer`."""
        raise NotImplementedError

    @property
    def channels(self) -> int:
        """Channels of the task's head for this run."""
        raise NotImplementedError

    def loss_for(self, target: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The loss of one raw prediction against the batch's ``target`` (target-side work such as
        normalisation is done once here, not per deep-supervision element). 0-d float32 tensor."""
        raise NotImplementedError

    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        """Raw prediction ``(N, C, H, W)`` -> the task's output in its units (what metrics, predict
        and export see): semseg logits, depth in metres, unit normals."""
        raise NotImplementedError

    def meter(self):
        """A fresh streaming meter: ``update(decoded, target)``, ``compute() -> {metric: value}``."""
        raise NotImplementedError

    def to_array(self, decoded: torch.Tensor) -> np.ndarray:
        """One image's decoded output ``(C, H, W)`` -> the raw result ``predict`` saves."""
        raise NotImplementedError

    def picture(self, array: np.ndarray) -> np.ndarray:
        """A raw result (:meth:`to_array`) -> ``(H, W, 3)`` uint8 picture."""
        raise NotImplementedError

    def save_raw(self, array: np.ndarray, out_dir: Path, stem: str) -> List[Path]:
        """Write the raw result of one image; returns the files written."""
        raise NotImplementedError

    def log_images(self, writer, decoded: torch.Tensor, raw: torch.Tensor, target: torch.Tensor,
                   step: int) -> None:
        """TensorBoard pictures (``val/{name}_pred``, ``val/{name}_gt``) of the first validation batch:
        ``decoded``/``raw`` predictions of its first few images, ``target`` of the whole batch (CPU)."""
        pred = np.stack([self.picture(self.to_array(d)) for d in decoded])
        writer.add_images(f"val/{self.name}_pred", pred, step, dataformats="NHWC")
        gt = np.stack([self.target_picture(t) for t in target[:len(decoded)]])
        writer.add_images(f"val/{self.name}_gt", gt, step, dataformats="NHWC")

    def target_picture(self, target: torch.Tensor) -> np.ndarray:
        """One image's target -> ``(H, W, 3)`` uint8 picture."""
        raise NotImplementedError

    def baseline(self, batches: Callable[[], Sequence[dict]]) -> Optional[Tuple[str, Dict]]:
        """A trivial predictor's ``(name, metrics)`` on the batches (``batches()`` iterates them
        anew each call), or None. Reported in ``summary.json`` as a floor to beat."""
        return None
