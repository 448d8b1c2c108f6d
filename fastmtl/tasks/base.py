"""The :class:`Task` interface: everything fastmtl needs to know about one dense-prediction task.

A task is one module in :mod:`fastmtl.tasks` defining a :class:`Task` subclass and ``TASK = ThatClass``.
The class-level part (name, augmentation rules, metric directions, output channels) works without a
run, so the data transforms (in loader workers), ``fastmtl compare`` and ``fastmtl profile`` use it
directly; an instance (built by :meth:`Task.for_run` from the run's config, the dataset's info and,
when rebuilt from a checkpoint, the task's saved state) carries the options that loss, metrics,
visualisation and outputs need.

Options: a task declares its options (:class:`TaskOption`: ``--task-opt TASK.OPTION=VALUE``, the
Config's ``task_options[TASK][OPTION]``) and, for the flags and Config fields of the two-task
era, their legacy names (``--depth-loss`` / ``depth_loss``); :mod:`fastmtl.config` and the CLI
are generated from these declarations and never name a task.

Shapes: a batch prediction is the model's raw output ``(N, C, H, W)`` for the task (the last element
of a deep-supervision list is the one evaluated); a target is the sample dict's ``sample[name]``
collated, ``(N, H, W)`` or ``(N, C, H, W)``; per-image arrays in :meth:`Task.to_array` are numpy,
height and width first.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

DEFAULT_WEIGHT = 0.5  # a task's fixed loss weight without --task-weight


def add_finite_histogram(writer, tag: str, values: torch.Tensor, step: int) -> None:
    """A TensorBoard histogram of the finite ``values`` (any shape); non-finite ones are left out with
    a warning (all of them: no histogram), as TensorBoard refuses them ("The histogram is empty")."""
    values = values.detach().float().flatten().cpu()
    finite = values[torch.isfinite(values)]
    if finite.numel() < values.numel():
        warnings.warn(f"TensorBoard histogram {tag} at step {step}: {values.numel() - finite.numel()} of "
                      f"{values.numel()} values are NaN or inf and left out"
                      f"{'; nothing to draw, skipped' if not finite.numel() else ''}")
    if finite.numel():
        writer.add_histogram(tag, finite, step)


@dataclass(frozen=True)
class TaskOption:
    """One option of a task.

    Attributes:
        name: the option's name (``--task-opt TASK.NAME=VALUE``).
        default: its value when not given.
        help: one line for ``--help``.
        choices: the valid values (strings), or None for any value of ``type``.
        type: the value's type (``str``, ``float``, ``int``); text from the CLI is converted.
        legacy: the Config field of the two-task era that sets it (e.g. ``depth_loss``); its CLI
            flag (``--depth-loss``) stays as an alias. None: no legacy name.
    """

    name: str
    default: Any
    help: str
    choices: Optional[Tuple[str, ...]] = None
    type: type = str
    legacy: Optional[str] = None

    def parse(self, value: Any, flag: str) -> Any:
        """``value`` (text from the CLI, or a JSON value) checked and converted; ConfigError naming ``flag``."""
        try:
            converted = self.type(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            converted = None
        if converted is None:
            raise ConfigError(f"{flag}: {value!r} is not a {self.type.__name__}")
        if self.choices is not None and converted not in self.choices:
            raise ConfigError(f"{flag}: unknown value {value!r}; valid choices: {', '.join(self.choices)}")
        return converted


def legacy_flag(field_name: str) -> str:
    """The CLI flag of a legacy Config field: ``depth_loss`` -> ``--depth-loss``."""
    return "--" + field_name.replace("_", "-")


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
        options: the task's :class:`TaskOption` declarations.
        legacy_weight: the Config field of the two-task era holding the task's weight (e.g.
            ``weight_semseg``, flag ``--weight-semseg``), or None.
        state_key: the checkpoint key under which :meth:`state` is saved (e.g. ``normalizer``), or
            None for a task with no state beyond its options.
        whole_split_in_mtan_style: under ``--metric-style mtan`` the meter still accumulates over
            the whole split (semseg: the MTAN code's confusion matrix) instead of averaging
            per-batch values (:class:`fastmtl.metrics.BatchMeanMeter`).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    pad_value: ClassVar[float]
    headline: ClassVar[str]
    metric_directions: ClassVar[Dict[str, int]]
    delta_m_metrics: ClassVar[Tuple[str, ...]]
    options: ClassVar[Tuple[TaskOption, ...]] = ()
    legacy_weight: ClassVar[Optional[str]] = None
    state_key: ClassVar[Optional[str]] = None
    whole_split_in_mtan_style: ClassVar[bool] = False

    @classmethod
    def option(cls, name: str) -> TaskOption:
        """The declaration of option ``name``; ConfigError naming ``--task-opt`` and the valid options."""
        for opt in cls.options:
            if opt.name == name:
                return opt
        valid = ", ".join(o.name for o in cls.options) or "none"
        raise ConfigError(f"--task-opt {cls.name}.{name}: unknown option of task {cls.name}; its options: {valid}")

    @classmethod
    def option_values(cls, given: Mapping[str, Any]) -> Dict[str, Any]:
        """Every option's value: ``given`` (``{option: value}``, checked) over the defaults."""
        values = {o.name: o.default for o in cls.options}
        for name, value in given.items():
            values[name] = cls.option(name).parse(value, f"--task-opt {cls.name}.{name}")
        return values

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

    @classmethod
    def random_target(cls, info, shape: Tuple[int, int, int], generator: torch.Generator,
                      device: torch.device) -> torch.Tensor:
        """A random batch target for ``shape = (N, H, W)`` in the layout the task's reader yields
        (collated), for the dataset ``info``: the inputs of the performance tools."""
        raise NotImplementedError

    # -- a run's task ----------------------------------------------------------------------

    @classmethod
    def for_run(cls, cfg, info, state: Optional[Mapping[str, Any]] = None) -> "Task":
        """The task with the run's options: ``cfg`` a :class:`~fastmtl.config.Config` (its
        ``task_options[name]``), ``info`` the :class:`~fastmtl.data.DatasetInfo`, ``state`` what
        :meth:`state` saved in the checkpoint (None for a new run)."""
        raise NotImplementedError

    def state(self) -> Any:
        """What the checkpoint keeps under :attr:`state_key` to rebuild this task (JSON-like)."""
        return None

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
        if decoded.is_floating_point():  # a diverging model's NaN / inf must not end the run here
            decoded = decoded.nan_to_num(0.0, 0.0, 0.0)
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
