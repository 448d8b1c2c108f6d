"""Evaluation: the one function used by training and by ``fastmtl eval`` (so their numbers agree).

Metric styles (``--metric-style``): ``libmtl`` (default; LibMTL's code, and the training run's)
accumulates every metric over every pixel of the split; ``mtan`` averages per-batch metrics
unweighted at batch size 2, as the MTAN and Nash-MTL code do (semseg's mIoU and pixel accuracy
still from one confusion matrix over the split). docs/tasks.md says which tables use which.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from tqdm import tqdm

from . import data as fdata
from .checkpoint import load_checkpoint
from .data.bad_samples import nonempty_batches
from .losses import last_prediction
from .errors import ConfigError
from .metrics import METRIC_STYLES, MTAN_BATCH_SIZE, BatchMeanMeter, TasksMeter
from .restore import checkpoint_tasks, model_from_checkpoint
from .runtime import amp_dtype_for, autocast_context
from .tasks import DEFAULT_TASKS, check_available
from .transforms import eval_transform


def check_metric_style(metric_style: str) -> None:
    if metric_style not in METRIC_STYLES:
        raise ConfigError(f"--metric-style: unknown value {metric_style!r}; valid choices: {', '.join(METRIC_STYLES)}")


def tasks_meter(tasks, metric_style: str = "libmtl") -> TasksMeter:
    """The meters of ``tasks`` in ``metric_style`` and the run's score ``multitask`` (each headline
    metric, signed)."""
    check_metric_style(metric_style)
    meters = {t.name: t.meter() if metric_style == "libmtl" or t.whole_split_in_mtan_style
              else BatchMeanMeter(t.meter) for t in tasks}
    return TasksMeter(meters, {t.headline: t.metric_directions[t.headline] for t in tasks})


def show_progress(progress: Optional[bool]) -> bool:
    """``progress`` True / False, or None: only when stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


@torch.no_grad()
def evaluate_tasks(model: torch.nn.Module, loader, tasks: Sequence, device: torch.device,
                   amp_dtype: Optional[torch.dtype] = None, channels_last: bool = False,
                   progress: Optional[bool] = False, metric_style: str = "libmtl") -> Dict:
    """Every metric of every task (:class:`fastmtl.tasks.Task`) of ``model`` over ``loader``, and
    ``multitask``; semseg adds ``iou_per_class`` ``{class name: IoU %}``.

    ``progress``: a progress bar on stderr (True), none (False), or one only on a terminal (None).
    ``metric_style``: ``libmtl`` or ``mtan`` (the module docstring; mtan's average is per batch
    of ``loader``).
    Batches are the data pipeline's dicts (``rgb (N, 3, H, W)`` normalised, one target per task).
    Predictions are the last element of a deep-supervision list, decoded by the task
    (:meth:`~fastmtl.tasks.Task.decode`: depth in metres, unit normals).
    """
    was_training = model.training
    model.eval()
    meter = tasks_meter(tasks, metric_style)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    bar = tqdm(total=len(loader) if hasattr(loader, "__len__") else None, desc="eval", unit="batch", leave=False,
               disable=not show_progress(progress), dynamic_ncols=True, file=sys.stderr)
    try:
        for batch in nonempty_batches(loader):
            rgb = batch["rgb"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
            with autocast_context(device, amp_dtype):
                out = model(rgb)
            meter.update({t.name: t.decode(last_prediction(out[t.name])) for t in tasks},
                         {t.name: batch[t.name].to(device) for t in tasks})
            bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    return meter.compute()


def evaluate_checkpoint(checkpoint: str, data_root: Optional[str] = None, split: str = "val", device: str = "cpu",
                        workers: int = 2, batch_size: Optional[int] = None, on_bad_sample: str = "error",
                        progress: Optional[bool] = None, metric_style: str = "libmtl") -> Dict:
    """``fastmtl eval``: the metrics of a checkpoint, computed exactly as the training run does
    (``metric_style="libmtl"``), or as the MTAN / Nash-MTL code does (``"mtan"``: per-batch means
    at batch size ``batch_size or 2``)."""
    check_metric_style(metric_style)
    ckpt = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(ckpt)
    tasks = checkpoint_tasks(ckpt, cfg)
    task_names = [t.name for t in tasks]
    dev = torch.device(device)
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    root = data_root or cfg.data_root
    root = Path(root) if root else fdata.default_data_root()
    dataset = fdata.open_dataset(root, split, cfg.dataset, transform=eval_transform(multiple=32),
                                 on_bad_sample=on_bad_sample, tasks=task_names)
    # readers that know their split's targets say so (a folder's normals/); else the training dataset's
    available = getattr(dataset, "targets", ckpt["dataset"].get("tasks", DEFAULT_TASKS))
    check_available(task_names, available, f"{root} (split {split})")
    default_batch = MTAN_BATCH_SIZE if metric_style == "mtan" else cfg.batch_size
    loader = fdata.build_loader(dataset, batch_size or default_batch, shuffle=False, workers=workers, seed=cfg.seed)
    return evaluate_tasks(model, loader, tasks, dev, amp_dtype_for(cfg.amp, dev), cfg.channels_last, progress=progress,
                          metric_style=metric_style)
