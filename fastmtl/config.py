"""The one run configuration: model knobs, data, optimisation, the tasks' options. Validated, JSON
round-trips; the valid choices are read from the registries that own them.

Field names are the CLI flags with ``-`` -> ``_`` (``--weight-decay`` -> ``weight_decay``). The tasks'
options and weights are ``task_options`` / ``task_weights``, declared by each task
(:class:`fastmtl.tasks.TaskOption`); the two-task era's fields (``weight_semseg``, ``depth_loss``...)
are read by :meth:`Config.from_dict` into them. Defaults are the report's best recipe
(distill_allconnect, ResNet-34, SE, dilation F,T,T, log depth, L1 depth loss, Adam, equal task
weights, poly schedule).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from . import tasks as task_registry
from .data import KINDS
from .data.bad_samples import ON_BAD_SAMPLE
from .errors import ConfigError  # re-exported: the CLI, the trainer and the sweeps raise it from here
from .fields import check_value, field_types
from .files import loads_object
from .models import ModelKnobs
from .optim import OPTIMIZERS
from .weighting import GRAD_MODES, METHODS, NAMES as WEIGHTING_NAMES, build as build_weighting

AMP_MODES = ("auto", "bf16", "fp16", "off")  # fastmtl.runtime's, once it owns them

__all__ = ["AMP_MODES", "Config", "ConfigError", "accepted_fields", "format_dilation", "merge_fields",
           "parse_dilation", "parse_size"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def legacy_fields() -> Dict[str, Tuple[str, Optional[str]]]:
    """``{field: (task, option)}`` of the two-task era's Config fields (``depth_loss`` -> depth.loss),
    with option None for a weight field (``weight_semseg``), from the tasks' declarations."""
    out: Dict[str, Tuple[str, Optional[str]]] = {}
    for name in task_registry.names():
        cls = task_registry.get(name)
        if cls.legacy_weight:
            out[cls.legacy_weight] = (name, None)
        out.update({opt.legacy: (name, opt.name) for opt in cls.options if opt.legacy})
    return out


def accepted_fields() -> Tuple[str, ...]:
    """The keys :meth:`Config.from_dict` accepts: the fields and the legacy fields, sorted."""
    return tuple(sorted({f.name for f in dataclasses.fields(Config)} | set(legacy_fields())))


def merge_fields(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """``{**base, **overrides}`` of Config dicts, with ``task_options`` / ``task_weights`` merged per
    task and option (an override of one task's option keeps the others)."""
    out = {**base, **overrides}
    if "task_weights" in base and "task_weights" in overrides:
        out["task_weights"] = {**base["task_weights"], **overrides["task_weights"]}
    if "task_options" in base and "task_options" in overrides:
        merged = {t: dict(o) for t, o in base["task_options"].items()}
        for t, o in overrides["task_options"].items():
            merged[t] = {**merged.get(t, {}), **o}
        out["task_options"] = merged
    return out


@dataclass
class Config(ModelKnobs):
    """A run's configuration: the model knobs (:class:`fastmtl.models.ModelKnobs`) and the fields below."""

    fused: Optional[bool] = None  # None: fused when the Triton kernels can run on the device
    # tasks (fastmtl.tasks): what the model predicts, in this order, and their options and weights
    tasks: Tuple[str, ...] = task_registry.DEFAULT_TASKS
    task_options: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # {task: {option: value}} over defaults
    task_weights: Dict[str, float] = field(default_factory=dict)  # fixed loss weights (default 0.5 each)
    # data
    dataset: str = "synthetic"
    data_root: Optional[str] = None  # None: the built-in synthetic set in the user cache
    size: Optional[Tuple[int, int]] = None  # training crop H, W; None: the budget's (see train.py)
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
    # task weighting (fastmtl.weighting): "fixed" uses task_weights
    weighting: str = "fixed"
    weighting_opts: Dict[str, Any] = field(default_factory=dict)  # the method's options over its paper defaults
    weighting_grads: str = "params"  # gradient methods: w.r.t. the shared "params" or the shared representation "rep"
    # run
    out: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    cuda_graphs: bool = False  # torch.compile mode="reduce-overhead" of model and loss (CUDA graphs); CUDA only
    amp: str = "auto"  # auto: bf16 on CUDA, off on CPU
    channels_last: bool = False
    eval_every: Optional[int] = None  # steps between evaluations; None: once per epoch
    # last.pt is also saved at each evaluation and on Ctrl-C (fastmtl/train.py)
    checkpoint_every: Optional[int] = None  # steps between last.pt saves; None: by time only
    checkpoint_minutes: float = 2.0  # save last.pt when this much training time has passed since the last save; 0: off
    # under torchrun: seconds a collective waits for the other processes before failing the run; None: torch's default
    dist_timeout: Optional[float] = None
    quiet: bool = False

    def validate(self) -> "Config":
        """Raise :class:`ConfigError` for any value that cannot work; return self."""
        self.validate_model()
        choices = {"optimizer": OPTIMIZERS, "dataset": KINDS, "amp": AMP_MODES, "on_bad_sample": ON_BAD_SAMPLE}
        for name, valid in choices.items():
            value = getattr(self, name)
            if value not in valid:
                raise ConfigError(f"{_flag(name)}: unknown value {value!r}; valid choices: {', '.join(valid)}")
        self._validate_tasks()
        self._validate_weighting()
        positive = {"lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs}
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise ConfigError(f"{_flag(name)} must be > 0, got {value}")
        if self.aspp and self.batch_size < 2:
            raise ConfigError("--batch-size 1 with --aspp: the ASPP image-pooling branch has a BatchNorm over a 1x1 "
                              "map, which needs at least 2 images per batch (and per process) in training")
        for name in ("weight_decay", "momentum", "workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if sum(self.task_weight(t) for t in self.tasks) <= 0:
            raise ConfigError(f"the task weights (--task-weight) of --tasks {','.join(self.tasks)} cannot all be 0")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"--max-steps must be > 0, got {self.max_steps}")
        if self.eval_every is not None and self.eval_every <= 0:
            raise ConfigError(f"--eval-every must be > 0, got {self.eval_every}")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            raise ConfigError(f"--checkpoint-every must be > 0, got {self.checkpoint_every}")
        if not 0 <= self.checkpoint_minutes < float("inf"):
            raise ConfigError(f"--checkpoint-minutes must be a number >= 0, got {self.checkpoint_minutes}")
        if self.dist_timeout is not None and not 0 < self.dist_timeout < float("inf"):
            raise ConfigError(f"--dist-timeout must be a number of seconds > 0, got {self.dist_timeout}")
        stride = self.output_stride
        h, w = self.size if self.size is not None else (stride, stride)
        if h <= 0 or w <= 0 or h % stride or w % stride:
            raise ConfigError(
                f"--size {h}x{w}: height and width must be positive multiples of {stride} "
                f"(the encoder's output stride with --dilation {format_dilation(self.dilation)})"
            )
        return self

    def _validate_tasks(self) -> None:
        try:
            task_registry.check_task_names(self.tasks)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for name, w in self.task_weights.items():
            if name not in self.tasks:
                raise ConfigError(f"--task-weight {name}: not one of --tasks {','.join(self.tasks)}")
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not w >= 0:
                raise ConfigError(f"--task-weight {name}={w!r}: must be a number >= 0")
        for name, options in self.task_options.items():
            if not task_registry.is_task(name):
                raise ConfigError(f"--task-opt {name}: unknown task {name!r}; valid tasks: "
                                  f"{', '.join(task_registry.names())}")
            if not isinstance(options, dict):
                raise ConfigError(f"--task-opt {name}: task_options[{name!r}] must be an object of options")
            task_registry.get(name).option_values(options)

    def task_weight(self, name: str) -> float:
        """The fixed loss weight of task ``name``: ``task_weights[name]`` (default 0.5)."""
        return float(self.task_weights.get(name, task_registry.DEFAULT_WEIGHT))

    def task_option(self, name: str, option: str) -> Any:
        """The value of task ``name``'s option ``option`` (its declared default when not given)."""
        return task_registry.get(name).option_values(self.task_options.get(name, {}))[option]

    def _validate_weighting(self) -> None:
        if self.weighting not in METHODS:
            raise ConfigError(f"--weighting: unknown value {self.weighting!r}; valid choices: {', '.join(WEIGHTING_NAMES)}")
        if self.weighting_grads not in GRAD_MODES:
            raise ConfigError(f"--weighting-grads: unknown value {self.weighting_grads!r}; valid choices: "
                              f"{', '.join(GRAD_MODES)}")
        if self.weighting_grads != "params" and METHODS[self.weighting].kind != "gradient":
            raise ConfigError(f"--weighting-grads {self.weighting_grads}: only for gradient methods; "
                              f"--weighting {self.weighting} weights the losses")
        if self.weighting == "fixed" and self.weighting_opts:
            raise ConfigError("--weighting-opt: --weighting fixed takes its weights from --task-weight")
        try:
            build_weighting(self.weighting, len(self.tasks), **self.weighting_opts)
        except ValueError as e:
            raise ConfigError(f"--weighting-opt: {e}") from None

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dilation"] = list(self.dilation)
        d["size"] = list(self.size) if self.size is not None else None
        d["weighting_opts"] = dict(self.weighting_opts)
        d["tasks"] = list(self.tasks)
        d["task_weights"] = dict(self.task_weights)
        d["task_options"] = {t: dict(o) for t, o in self.task_options.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        """A Config from its dict (:meth:`to_dict`, a config.json, a sweep's fields); the legacy fields
        (:func:`legacy_fields`) of the run's tasks go into ``task_options`` / ``task_weights``, those
        of other tasks are dropped (they had no effect)."""
        data = _from_legacy(cls.check_fields(data))
        data["task_weights"] = check_value("task_weights", data["task_weights"], field_types(cls)["task_weights"])
        return cls(**data)

    @classmethod
    def check_fields(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        """``data`` (Config fields; legacy fields pass through) with every value checked against its
        field's type: numbers as text converted, ``"F,T,T"`` / ``"64x128"`` / ``"semseg,depth"`` text
        parsed for dilation / size / tasks; ConfigError naming the field otherwise (or an unknown field)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be an object of fields, got {type(data).__name__}")
        unknown = sorted(set(data) - set(accepted_fields()))
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; valid fields: {', '.join(accepted_fields())}")
        types = field_types(cls)
        out = dict(data)
        for name, value in data.items():
            if name not in types:  # a legacy field: checked as its task's option / weight
                continue
            if isinstance(value, str) and name in _TEXT_FORMS:
                try:
                    value = _TEXT_FORMS[name](value)
                except ValueError as e:  # its message names the field (flag)
                    raise ConfigError(str(e)) from None
            out[name] = check_value(name, value, types[name])
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "config.json") -> "Config":
        """A Config from JSON text (a config.json); errors name ``where``."""
        return cls.from_dict(loads_object(text, where))


def _from_legacy(data: Dict[str, Any]) -> Dict[str, Any]:
    """``data`` with its legacy fields moved into ``task_options`` / ``task_weights`` (see
    :meth:`Config.from_dict`); a legacy field and a differing generic value is a ConfigError."""
    run_tasks = tuple(data.get("tasks", task_registry.DEFAULT_TASKS))
    weights = dict(data.get("task_weights") or {})  # both type-checked (Config.check_fields)
    options = {t: dict(o) for t, o in (data.get("task_options") or {}).items()}
    for legacy, (task, option) in legacy_fields().items():
        if legacy not in data:
            continue
        value = data.pop(legacy)
        if task not in run_tasks:
            continue
        where, target, key = ((f"task_weights[{task!r}]", weights, task) if option is None
                              else (f"task_options[{task!r}][{option!r}]", options.setdefault(task, {}), option))
        if key in target and target[key] != value:
            raise ConfigError(f"{legacy} = {value!r} and {where} = {target[key]!r}: give one of them")
        target[key] = value
    data["task_weights"] = weights
    data["task_options"] = {t: o for t, o in options.items() if o}
    return data


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


_TEXT_FORMS = {"dilation": parse_dilation, "size": lambda t: parse_size(t, "size"),
               "tasks": task_registry.parse_tasks}  # fields also given as text, parsed
