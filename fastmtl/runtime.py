"""Where and how a run executes: device, process group (torchrun), autocast dtype, and the
budget fields a config leaves open (:func:`resolve_config`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from .config import Config, ConfigError
from .evaluate import amp_dtype_for

# The CPU budget used when no --epochs / --max-steps / --size is given on a CPU device:
# about 10 minutes of training on 2 cores for the default model (see README).
CPU_BUDGET_STEPS = 200
CPU_BUDGET_SIZE = (64, 128)
GPU_EPOCHS = 16


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: Optional[torch.dtype] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_runtime(cfg: Config) -> Runtime:
    """Device, process group (when started by torchrun) and autocast dtype for ``cfg``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(cfg.device)
        except RuntimeError as e:
            raise ConfigError(f"--device {cfg.device!r}: {e}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {cfg.device}: CUDA is not available on this machine")
        if device.type == "cuda" and world_size > 1:
            device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world_size, amp_dtype_for(cfg.amp, device))


def resolve_config(cfg: Config, rt: Runtime) -> Config:
    """Fill the fields left open with what will run: the budget (the full recipe on GPU, the CPU
    budget on CPU), the device, the autocast mode and whether the fused kernels are used."""
    device = rt.device
    if cfg.epochs is None and cfg.max_steps is None:
        if device.type == "cpu":
            cfg.max_steps = CPU_BUDGET_STEPS
            if cfg.size is None:
                cfg.size = CPU_BUDGET_SIZE
        else:
            cfg.epochs = GPU_EPOCHS
    cfg.device = str(device)
    cfg.amp = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "off"}[rt.amp_dtype]
    if cfg.size is None:
        cfg.size = (128, 256)
    if cfg.fused is None:
        from .kernels import kernels_available

        cfg.fused = kernels_available(device)
    return cfg.validate()

