"""Rebuilding what a checkpoint describes: its config, its model (weights loaded) and its run's tasks."""
from __future__ import annotations

from typing import Any, Dict

from .config import Config
from .data import DatasetInfo
from .models import build_model
from .tasks import build_tasks


def checkpoint_config(ckpt: Dict[str, Any]):
    """The :class:`~fastmtl.config.Config` a checkpoint was trained with.

    Checkpoints of version 1 predate ``dilation_style``: their encoder dilated the torchvision way.
    """
    data = dict(ckpt["config"])
    if ckpt.get("version", 1) < 2:
        data.setdefault("dilation_style", "torchvision")
    return Config.from_dict(data)


def model_from_checkpoint(ckpt: Dict[str, Any], fused: bool = False):
    """Rebuild the model of a checkpoint and load its weights. Returns ``(model, config)``."""
    config = checkpoint_config(ckpt)
    config.pretrained = None  # the weights come from the checkpoint
    model = build_model(config, ckpt["outputs_desc"], fused=fused)
    model.load_state_dict(ckpt["model"])
    return model, config


def checkpoint_tasks(ckpt: Dict[str, Any], config=None):
    """The :class:`fastmtl.tasks.Task` objects of a checkpoint's run (``config.tasks``; checkpoints
    from before tasks were configurable have the config's default tasks), with their saved state."""
    config = config if config is not None else checkpoint_config(ckpt)
    return build_tasks(config, DatasetInfo.from_dict(ckpt["dataset"]), saved=ckpt)
