"""The one run configuration: model knobs, data, optimisation. Validated, JSON round-trips.

Field names are the CLI flags with ``-`` -> ``_`` (``--weight-depth`` -> ``weight_depth``).
Defaults are the report's best recipe (distill_allconnect, ResNet-34, SE, dilation F,T,T,
log depth, L1 depth loss, Adam, equal task weights, poly schedule).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

MODELS = ("joint", "branched", "distill", "distill_allconnect")
ENCODER_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101")
ATTENTION_INITS = ("zero", "default")
DILATION_STYLES = ("template", "torchvision")
OPTIMIZERS = ("sgd", "adam", "adamw")
DEPTH_NORMS = ("linear", "log")
DEPTH_LOSSES = ("l1", "l2", "silog")
NORMALS_LOSSES = ("cosine", "l1")
DEFAULT_TASK_WEIGHT = 0.5  # a task other than semseg / depth without --task-weight
DATASETS = ("synthetic", "auto", "miniscapes", "nyuv2", "cityscapes", "cityscapes7", "cityscapes19")  # fastmtl.data.KINDS
AMP_MODES = ("auto", "bf16", "fp16", "off")
ON_BAD_SAMPLE = ("error", "skip")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the flag and the valid choices."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class Config:
    # model
    model: str = "distill_allconnect"
    encoder: str = "resnet34"
    dilation: Tuple[bool, bool, bool] = (False, True, True)
    dilation_style: str = "template"  # which 3x3 convs a dilated layer dilates (models/encoder.py)
    aspp: bool = True
    skip: bool = True
    se: bool = True
    attention_init: str = "default"
    pretrained: Optional[str] = None
    fused: Optional[bool] = None  # None: fused when the Triton kernels can run on the device
    aspp_dropout: float = 0.0
    # tasks (fastmtl.tasks): what the model predicts, in this order
    tasks: Tuple[str, ...] = ("semseg", "depth")
    # data
    dataset: str = "synthetic"
    data_root: Optional[str] = None  # None: the built-in synthetic set in the user cache
    size: Optional[Tuple[int, int]] = None  # training crop H, W; None: the budget's (see train.py)
    depth_norm: str = "log"
    workers: int = 2
    on_bad_sample: str = "error"  # or "skip": drop unreadable / inconsistent samples with a warning
    # optimisation
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 4
    epochs: Optional[int] = None  # None with max_steps None: the device's budget (see train.py)
    max_steps: Optional[int] = None
    weight_semseg: float = 0.5
    weight_depth: float = 0.5
    depth_loss: str = "l1"
    task_weights: Dict[str, float] = field(default_factory=dict)  # tasks other than semseg / depth (default 0.5)
    normals_loss: str = "cosine"
    # task weighting (fastmtl.weighting): "fixed" uses weight_semseg / weight_depth
    weighting: str = "fixed"
    weighting_opts: Dict[str, Any] = field(default_factory=dict)  # the method's options over its paper defaults
    weighting_grads: str = "params"  # gradient methods: w.r.t. the shared "params" or the shared representation "rep"
    # run
    out: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    amp: str = "auto"  # auto: bf16 on CUDA, off on CPU
    channels_last: bool = False
    eval_every: Optional[int] = None  # steps between evaluations; None: once per epoch
    quiet: bool = False

    def validate(self) -> "Config":
        """Raise :class:`ConfigError` for any value that cannot work; return self."""
        choices = {
            "model": MODELS, "encoder": ENCODER_NAMES, "attention_init": ATTENTION_INITS, "dilation_style": DILATION_STYLES,
            "optimizer": OPTIMIZERS, "depth_norm": DEPTH_NORMS, "depth_loss": DEPTH_LOSSES, "normals_loss": NORMALS_LOSSES,
            "dataset": DATASETS, "amp": AMP_MODES, "on_bad_sample": ON_BAD_SAMPLE,
        }
        for name, valid in choices.items():
            value = getattr(self, name)
            if value not in valid:
                raise ConfigError(f"{_flag(name)}: unknown value {value!r}; valid choices: {', '.join(valid)}")
        self._validate_tasks()
        self._validate_weighting()
        if len(self.dilation) != 3:
            raise ConfigError(f"--dilation needs three flags (layer2,layer3,layer4), got {self.dilation!r}")
        positive = {"lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs}
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise ConfigError(f"{_flag(name)} must be > 0, got {value}")
        if self.aspp and self.batch_size < 2:
            raise ConfigError("--batch-size 1 with --aspp: the ASPP image-pooling branch has a BatchNorm over a 1x1 "
                              "map, which needs at least 2 images per batch (and per process) in training")
        for name in ("weight_decay", "momentum", "weight_semseg", "weight_depth", "workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if sum(self.task_weight(t) for t in self.tasks) <= 0:
            if set(self.tasks) == {"semseg", "depth"}:
                raise ConfigError("--weight-semseg and --weight-depth cannot both be 0")
            raise ConfigError(f"the task weights of --tasks {','.join(self.tasks)} cannot all be 0")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"--max-steps must be > 0, got {self.max_steps}")
        if self.eval_every is not None and self.eval_every <= 0:
            raise ConfigError(f"--eval-every must be > 0, got {self.eval_every}")
        if not 0.0 <= self.aspp_dropout < 1.0:
            raise ConfigError(f"--aspp-dropout must be in [0, 1), got {self.aspp_dropout}")
        stride = self.output_stride
        h, w = self.size if self.size is not None else (stride, stride)
        if h <= 0 or w <= 0 or h % stride or w % stride:
            raise ConfigError(
                f"--size {h}x{w}: height and width must be positive multiples of {stride} "
                f"(the encoder's output stride with --dilation {format_dilation(self.dilation)})"
            )
        if self.model == "distill_allconnect" and not self.skip:
            raise ConfigError("--model distill_allconnect is the all-scale skip decoder: it cannot be used with --no-skip")
        if self.model == "distill_allconnect" and stride < 8:
            raise ConfigError("--model distill_allconnect needs features at 8x: use a --dilation with output stride >= 8")
        return self

    def _validate_tasks(self) -> None:
        from .tasks import check_task_names

        try:
            check_task_names(self.tasks)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for name, w in self.task_weights.items():
            if name in ("semseg", "depth"):
                raise ConfigError(f"--task-weight {name}: the weight of {name} is --weight-{name}")
            if name not in self.tasks:
                raise ConfigError(f"--task-weight {name}: not one of --tasks {','.join(self.tasks)}")
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not w >= 0:
                raise ConfigError(f"--task-weight {name}={w!r}: must be a number >= 0")

    def task_weight(self, name: str) -> float:
        """The fixed loss weight of task ``name``: ``weight_semseg``, ``weight_depth`` or
        ``task_weights[name]`` (default :data:`DEFAULT_TASK_WEIGHT`)."""
        if name in ("semseg", "depth"):
            return float(getattr(self, f"weight_{name}"))
        return float(self.task_weights.get(name, DEFAULT_TASK_WEIGHT))

    def _validate_weighting(self) -> None:
        from .weighting import GRAD_MODES, METHODS, NAMES, build

        if self.weighting not in METHODS:
            raise ConfigError(f"--weighting: unknown value {self.weighting!r}; valid choices: {', '.join(NAMES)}")
        if self.weighting_grads not in GRAD_MODES:
            raise ConfigError(f"--weighting-grads: unknown value {self.weighting_grads!r}; valid choices: "
                              f"{', '.join(GRAD_MODES)}")
        if self.weighting_grads != "params" and METHODS[self.weighting].kind != "gradient":
            raise ConfigError(f"--weighting-grads {self.weighting_grads}: only for gradient methods; "
                              f"--weighting {self.weighting} weights the losses")
        if self.weighting == "fixed" and self.weighting_opts:
            raise ConfigError("--weighting-opt: --weighting fixed takes its weights from --weight-semseg / --weight-depth"
                              " / --task-weight")
        try:
            build(self.weighting, len(self.tasks), **self.weighting_opts)
        except ValueError as e:
            raise ConfigError(f"--weighting-opt: {e}") from None

    @property
    def output_stride(self) -> int:
        return 32 // (2 ** sum(bool(f) for f in self.dilation))

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dilation"] = list(self.dilation)
        d["size"] = list(self.size) if self.size is not None else None
        d["weighting_opts"] = dict(self.weighting_opts)
        d["tasks"] = list(self.tasks)
        d["task_weights"] = dict(self.task_weights)
        return d

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; valid fields: {', '.join(sorted(known))}")
        data = dict(data)
        if "dilation" in data:
            data["dilation"] = tuple(bool(x) for x in data["dilation"])
        if data.get("size") is not None:
            data["size"] = tuple(int(x) for x in data["size"])
        if "tasks" in data:
            data["tasks"] = tuple(data["tasks"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.from_dict(json.loads(text))


def format_dilation(flags) -> str:
    return ",".join("T" if f else "F" for f in flags)


def parse_size(text: str, flag: str = "--size") -> Tuple[int, int]:
    """``"128x256"`` (H x W) -> ``(128, 256)``."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{flag} must look like HxW, e.g. 128x256, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"{flag} must be positive, got {text!r}")
    return h, w


def parse_dilation(text: str) -> Tuple[bool, bool, bool]:
    """``"F,F,T"`` -> ``(False, False, True)`` (also accepts true/false/1/0)."""
    truthy, falsy = {"t", "true", "1", "y", "yes"}, {"f", "false", "0", "n", "no"}
    parts = [p.strip().lower() for p in str(text).split(",")]
    if len(parts) != 3 or any(p not in truthy | falsy for p in parts):
        raise ConfigError(f"--dilation must be three comma-separated flags like F,F,T (layer2,layer3,layer4), got {text!r}")
    return tuple(p in truthy for p in parts)  # type: ignore[return-value]
