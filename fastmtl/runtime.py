"""Where and how a run executes: the device (:func:`resolve_device`), the precision (the one
``--amp`` name <-> autocast dtype mapping, :func:`autocast_context`), the process group
(torchrun, :func:`launch_ranks`, :func:`setup_runtime`) and the budget fields a config leaves open
(:func:`resolve_config`).

Ranks under torchrun, on one node or many: ``RANK`` is global (0 .. WORLD_SIZE-1 over all nodes: what
rank 0 writes, the data shard); ``LOCAL_RANK`` counts the processes of one node (the GPU index, the
work done once per node such as a node-local dataset cache)."""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional, Tuple

import torch
import torch.distributed as dist

from .config import AMP_MODES, Config, ConfigError
from .kernels import kernels_available

# The CPU budget used when no --epochs / --max-steps / --size is given on a CPU device:
# about 10 minutes of training on 2 cores for the default model (docs/training.md, "Budget").
CPU_BUDGET_STEPS = 200
CPU_BUDGET_SIZE = (64, 128)
GPU_EPOCHS = 16

# The autocast dtype of each ``--amp`` name but ``auto`` (config.AMP_MODES, the flag's choices).
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}
assert set(AMP_MODES) == {"auto", *AMP_DTYPES}, "config.AMP_MODES and runtime.AMP_DTYPES disagree"


def amp_dtype_for(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``--amp`` (``auto``: bf16 on CUDA, off elsewhere); None is no autocast."""
    device = torch.device(device)
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    if amp not in AMP_DTYPES:
        raise ConfigError(f"--amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    return AMP_DTYPES[amp]


def amp_name(amp_dtype: Optional[torch.dtype]) -> str:
    """The ``--amp`` name of an autocast dtype (None -> ``off``): the inverse of :func:`amp_dtype_for`."""
    for name, dtype in AMP_DTYPES.items():
        if dtype == amp_dtype:
            return name
    raise ValueError(f"no --amp mode for dtype {amp_dtype}; valid: {', '.join(map(str, AMP_DTYPES.values()))}")


def autocast_context(device: torch.device, amp_dtype: Optional[torch.dtype]):
    """``torch.autocast`` for ``amp_dtype`` on ``device``, or a no-op when it is None."""
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=amp_dtype)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``--device``: ``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; anything
    else is checked by torch (ConfigError naming ``--device`` for a bad name or a missing GPU)."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device {name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


PEER_FAILURE_MARKERS = ("gloo/transport", "ProcessGroupGloo", "ProcessGroupNCCL", "NCCL error", "NCCL communicator",
                        "Connection reset by peer", "Connection closed by peer",
                        "Application timeout caused pair closure", "Timed out waiting",
                        "Watchdog caught collective operation timeout")
"""Text of the plain RuntimeErrors that gloo and NCCL raise when a peer is gone (torch.distributed's
own errors are :class:`torch.distributed.DistError`)."""


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is what torch.distributed raises in one process when another rank or node of
    the run failed, was stopped, or did not answer within the process group's timeout (``--dist-timeout``)."""
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in PEER_FAILURE_MARKERS)


def launch_ranks() -> Tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` of this process from torchrun's environment (``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``); ``(0, 0, 1)`` when not started by torchrun."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")))


@dataclass
class Runtime:
    """Where a run executes: ``rank`` is global over all nodes, ``local_rank`` on this node."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: Optional[torch.dtype] = None
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Global rank 0: the one process that writes the run directory."""
        return self.rank == 0

    @property
    def is_node_main(self) -> bool:
        """Local rank 0: the first process of its node."""
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        """The run's autocast context (a no-op without AMP)."""
        return autocast_context(self.device, self.amp_dtype)


def setup_runtime(cfg: Config) -> Runtime:
    """Device, process group (when started by torchrun: NCCL on CUDA, gloo otherwise, with the
    ``cfg.dist_timeout`` of its collectives) and autocast dtype for ``cfg``."""
    rank, local_rank, world_size = launch_ranks()
    device = resolve_device(cfg.device, local_rank)
    if device.type == "cuda" and world_size > 1:
        device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        timeout = None if cfg.dist_timeout is None else timedelta(seconds=cfg.dist_timeout)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return Runtime(device, rank, world_size, amp_dtype_for(cfg.amp, device), local_rank)


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
    cfg.amp = amp_name(rt.amp_dtype)
    if cfg.size is None:
        cfg.size = (128, 256)
    if cfg.fused is None:
        cfg.fused = kernels_available(device)
    return cfg.validate()
