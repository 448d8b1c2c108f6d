"""``fastmtl profile``: parameters, MACs (FlopCounterMode FLOPs / 2) and throughput of a model
(the throughput's train step is the trainer's, :class:`fastmtl.perf.step_runner.StepRunner`).

MACs count convolutions and matmuls only (what ``torch.utils.flop_counter`` counts; BN,
activations, pooling and interpolation are free), for one image of the given size.
"""
from __future__ import annotations

import statistics
import time
from typing import Dict, List, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from fastmtl.config import Config
from fastmtl.data.classes import NUM_CLASSES

from .step_runner import StepRunner


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, size: Tuple[int, int], depth: int = 0) -> Tuple[int, Dict[str, int]]:
    """MACs of one forward pass of a ``(1, 3, H, W)`` input in eval mode.

    Returns ``(total, {module path: macs})`` for modules up to ``depth`` levels below the
    model (empty for depth 0; modules without MACs left out). Runs under ``no_grad``, also
    when called inside ``inference_mode`` (where FlopCounterMode alone would count nothing).
    """
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, *size, device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, depth=max(depth, 1))
    try:
        with torch.inference_mode(False), torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    counts = {name.split(".", 1)[1]: sum(ops.values()) // 2
              for name, ops in counter.get_flop_counts().items() if "." in name}

    def macs_of(path: str, module: torch.nn.Module) -> int:
        # containers that are never called themselves (ModuleDict, ModuleList) sum their children
        if path in counts:
            return counts[path]
        return sum(macs_of(f"{path}.{name}", child) for name, child in module.named_children())

    per_module = {path: macs_of(path, module) for path, module in model.named_modules()
                  if path and path.count(".") < depth}
    return counter.get_total_flops() // 2, {k: v for k, v in per_module.items() if v}


def _median_time(fn, warmup: int, repeats: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_throughput(runner: StepRunner, warmup: int = 2, repeats: int = 5) -> Dict[str, float]:
    """Forward (eval, ``no_grad``) and train-step (the trainer's step, :mod:`fastmtl.step`) images/s
    of ``runner``; median of ``repeats`` after ``warmup`` calls."""
    t_fwd = _median_time(runner.infer, warmup, repeats, runner.device)
    t_train = _median_time(runner.train, warmup, repeats, runner.device)
    return {"forward_images_per_s": runner.batch / t_fwd, "train_images_per_s": runner.batch / t_train}


def profile_model(cfg: Config, size: Tuple[int, int], depth: int = 0, throughput: bool = False,
                  device: str = "cpu", batch_size: int = 2, num_classes: int = NUM_CLASSES) -> Dict:
    """Everything ``fastmtl profile`` prints, as a dict: params and MACs of ``cfg``'s model (heads
    for ``cfg.tasks`` with ``num_classes`` semantic classes) at ``size`` ``(H, W)``, and with
    ``throughput`` its images/s on ``device`` at ``batch_size`` (autocast per ``cfg.amp``)."""
    dev = torch.device(device if throughput else "cpu")
    runner = StepRunner(cfg, dev, batch_size, size, num_classes)
    model = runner.parts.model
    macs, per_module = count_macs(model, size, depth)
    result = {"params": count_params(model), "macs": int(macs), "gmacs": macs / 1e9, "size": list(size)}
    if depth:
        result["modules"] = per_module
    if throughput:
        result["device"] = str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev)
        result["batch_size"] = batch_size
        result.update(measure_throughput(runner))
    return result


def format_profile(result: Dict) -> str:
    """A readable table of :func:`profile_model`'s result."""
    lines = [f"params      {result['params'] / 1e6:10.3f} M  ({result['params']:,})",
             f"MACs        {result['gmacs']:10.3f} G  at {result['size'][0]}x{result['size'][1]}"]
    if "forward_images_per_s" in result:
        lines.append(f"forward     {result['forward_images_per_s']:10.2f} images/s  ({result['device']}, batch {result['batch_size']})")
        lines.append(f"train step  {result['train_images_per_s']:10.2f} images/s")
    modules = result.get("modules")
    if modules:
        width = max(len(k) for k in modules)
        lines += ["", f"{'module'.ljust(width)}  {'GMACs':>9}  {'share':>6}"]
        total = max(result["macs"], 1)
        for name, macs in modules.items():
            indent = "  " * name.count(".")
            lines.append(f"{(indent + name).ljust(width + 2 * name.count('.'))}  {macs / 1e9:9.3f}  {100 * macs / total:5.1f}%")
    return "\n".join(lines)
