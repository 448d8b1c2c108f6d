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
and ``width`` on the input and every output (each task's class / channel axis is static). The target
(``--out``) is checked before the checkpoint is loaded, and the file is written next to it and
renamed onto it when complete.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

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
    path = Path(out)
    check_target(path)
    model, (h, w) = deploy_model(checkpoint)
    partial = path.with_name(f".{path.name}.partial")  # renamed onto --out once complete: nothing partial left
    try:
        _write(model, h, w, partial, fmt)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def check_target(path: Path) -> None:
    """OSError naming ``--out`` when ``path`` cannot take the exported file: a directory, a missing
    or non-folder parent, a folder that cannot be written."""
    if path.is_dir():
        raise IsADirectoryError(f"--out {path}: is a directory; give a file name, e.g. {path / 'model.onnx'}")
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"--out {path}: the folder {parent} does not exist (or is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"--out {path}: cannot write there (permission denied)")


def _write(model: DeployModel, h: int, w: int, path: Path, fmt: str) -> None:
    """``model`` traced on a ``(1, 3, h, w)`` input, saved to ``path`` as ``fmt``."""
    example = torch.randn(1, 3, h, w)
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
                              dynamic_axes={name: dict(axes) for name in INPUT_NAMES + model.output_names})
            _declare_channels(path, {t.name: t.channels for t in model.tasks})


def _declare_channels(path: Path, channels: Dict[str, int]) -> None:
    """Give each output of the ONNX file at ``path`` its static channel count: the TorchScript-based
    exporter's shape inference can name the class axes of different tasks with one shared symbol,
    which would declare them equal and variable."""
    import onnx

    graph = onnx.load(str(path))
    for output in graph.graph.output:
        dim = output.type.tensor_type.shape.dim[1]
        dim.ClearField("dim_param")
        dim.dim_value = channels[output.name]
    onnx.save(graph, str(path))
