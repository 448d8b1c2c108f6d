"""``fastmtl export``: a checkpoint as a deployable ONNX or TorchScript file.

The exported graph is :class:`DeployModel`: input ``rgb (N, 3, H, W)`` float32, RGB in [0, 1]
normalised with the ImageNet mean / std (as the training data; H and W multiples of the model's
``size_multiple``); one output per task of the run, named after it, in the task's units
(:meth:`fastmtl.tasks.Task.decode`): ``semseg (N, classes, H, W)`` logits (argmax = trainId),
``depth (N, 1, H, W)`` in metres (the model's normalisation undone), ``normals (N, 3, H, W)``
unit vectors. Distillation models export
their final prediction. The model is rebuilt with the reference (unfused) modules, so the file
needs neither Triton nor fastmtl to run.

ONNX: opset :data:`ONNX_OPSET`, TorchScript-based exporter, dynamic axes ``batch``, ``height``
and ``width`` on the input and every output.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Sequence, Tuple

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .restore import checkpoint_tasks, model_from_checkpoint
from .config import ConfigError
from .losses import last_prediction

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
INPUT_NAMES = ["rgb"]


class DeployModel(nn.Module):
    """``rgb (N, 3, H, W)`` normalised -> one tensor per task, in ``tasks`` order, decoded
    (semseg logits ``(N, C, H, W)``, depth metres ``(N, 1, H, W)``, unit normals ``(N, 3, H, W)``)."""

    def __init__(self, model: nn.Module, tasks: Sequence):
        super().__init__()
        self.model, self.tasks = model, list(tasks)

    @property
    def output_names(self) -> List[str]:
        return [t.name for t in self.tasks]

    def forward(self, rgb: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.model(rgb)
        return tuple(t.decode(last_prediction(out[t.name])) for t in self.tasks)


def deploy_model(checkpoint: str) -> Tuple[DeployModel, Tuple[int, int]]:
    """The eval-mode :class:`DeployModel` of a checkpoint and an example input size ``(H, W)``."""
    ckpt = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(ckpt, fused=False)
    deploy = DeployModel(model, checkpoint_tasks(ckpt, cfg)).eval()
    m = model.size_multiple
    h, w = cfg.size if cfg.size else (2 * m, 2 * m)
    return deploy, (-(-h // m) * m, -(-w // m) * m)


def export(checkpoint: str, out: str, fmt: str) -> Path:
    """Write the checkpoint's :class:`DeployModel` to ``out`` as ``fmt`` (onnx | torchscript)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown value {fmt!r}; valid choices: {', '.join(FORMATS)}")
    model, (h, w) = deploy_model(checkpoint)
    example = torch.randn(1, 3, h, w)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # the shape checks and same-size shortcuts are Python branches: traced once, they hold for
        # every input size that is a multiple of the model's size_multiple
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if fmt == "torchscript":
            traced = torch.jit.trace(model, example, check_trace=False)
            traced.save(str(path))
        else:
            import importlib.util

            if importlib.util.find_spec("onnx") is None:  # torch's exporter needs it
                raise ConfigError("--format onnx needs the onnx package: pip install onnx onnxruntime "
                                  "(or pip install -e \".[export]\")")
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=INPUT_NAMES, output_names=model.output_names,
                              dynamic_axes={name: axes for name in INPUT_NAMES + model.output_names})
    return path
