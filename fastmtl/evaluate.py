"""Evaluation: the one function used by training and by ``fastmtl eval`` (so their numbers agree)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Dict, Optional, Sequence

import torch

from .data.folder import nonempty_batches
from .losses import last_prediction
from .metrics import MultiTaskMeter


def amp_dtype_for(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``--amp`` (``auto``: bf16 on CUDA, off elsewhere)."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def autocast_context(device: torch.device, amp_dtype: Optional[torch.dtype]):
    """``torch.autocast`` for ``amp_dtype`` on ``device``, or a no-op when it is None."""
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, normalizer, num_classes: int, depth_range, device: torch.device,
             amp_dtype: Optional[torch.dtype] = None, channels_last: bool = False,
             ignore_index: int = 255, class_names: Optional[Sequence[str]] = None,
             progress: Optional[bool] = False) -> Dict:
    """mIoU, SI-logRMSE, multitask, the depth extras and ``iou_per_class`` of ``model`` over ``loader``.

    ``iou_per_class`` is ``{class name: IoU %}`` (names from ``class_names``, else the trainIds).
    ``progress``: a progress bar on stderr (True), none (False), or one only on a terminal (None).

    Batches are the data pipeline's dicts (``rgb (N, 3, H, W)`` normalised, ``semseg (N, H, W)``,
    ``depth (N, 1, H, W)`` metres with NaN invalid). Predictions are the last element of a
    deep-supervision list; depth is mapped back to metres with ``normalizer.denormalize``.
    """
    was_training = model.training
    model.eval()
    meter = MultiTaskMeter(num_classes, depth_range, ignore_index)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    from tqdm import tqdm

    bar = tqdm(total=len(loader) if hasattr(loader, "__len__") else None, desc="eval", unit="batch", leave=False, disable=progress is False, dynamic_ncols=True)
    try:
        for batch in nonempty_batches(loader):
            rgb = batch["rgb"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
            with autocast_context(device, amp_dtype):
                out = model(rgb)
            depth_m = normalizer.denormalize(last_prediction(out["depth"]).float())
            meter.update(last_prediction(out["semseg"]).float(), batch["semseg"].to(device),
                         depth_m, batch["depth"].to(device))
            bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    return {**meter.compute(), "iou_per_class": dict(zip(names, meter.semseg.iou_per_class().tolist()))}


def evaluate_checkpoint(checkpoint: str, data_root: Optional[str] = None, split: str = "val", device: str = "cpu",
                        workers: int = 2, batch_size: Optional[int] = None, on_bad_sample: str = "error",
                        progress: Optional[bool] = None) -> Dict:
    """``fastmtl eval``: the metrics of a checkpoint, computed exactly as the training run does."""
    from pathlib import Path

    from . import data as fdata
    from .checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(ckpt)
    dev = torch.device(device)
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    root = data_root or cfg.data_root
    root = Path(root) if root else fdata.default_data_root()
    dataset = fdata.open_dataset(root, split, cfg.dataset, transform=fdata.eval_transform(multiple=32),
                                 on_bad_sample=on_bad_sample)
    loader = fdata.build_loader(dataset, batch_size or cfg.batch_size, shuffle=False, workers=workers, seed=cfg.seed)
    info = ckpt["dataset"]
    return evaluate(model, loader, fdata.DepthNormalizer.from_dict(ckpt["normalizer"]), info["num_classes"],
                    tuple(info["depth_range"]), dev, amp_dtype_for(cfg.amp, dev), cfg.channels_last, info["ignore_index"],
                    class_names=info.get("class_names"), progress=progress)
