"""The flags shared by several commands: the model knobs, the training run's flags, the tasks' flags
(generated from their declarations) and the Config they parse into (over ``--config FILE``)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict

from .. import tasks as task_registry
from ..config import Config, ConfigError, format_dilation, merge_fields, parse_dilation, parse_size
from ..tasks.base import DEFAULT_WEIGHT, legacy_flag
from ..weighting import parse_options

SUPPRESS = argparse.SUPPRESS  # a flag not given is absent from the namespace (the Config's default holds)


def size_type(text: str):
    """argparse type of ``HxW`` flags."""
    try:
        return parse_size(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def count_type(minimum: int):
    """argparse type of an integer flag that must be >= ``minimum`` (a batch size >= 1, workers >= 0)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _dilation(text: str):
    try:
        return parse_dilation(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model knobs the report varies (defaults: the report's best recipe)."""
    d = Config()
    g = p.add_argument_group("model")
    g.add_argument("--tasks", default=SUPPRESS, metavar="LIST",  # parsed by Config.check_fields: one-line errors
                   help=f"comma-separated tasks, one head each: {', '.join(task_registry.names())} "
                        f"(default {','.join(d.tasks)})")
    g.add_argument("--model", default=SUPPRESS, help=f"joint | branched | distill | distill_allconnect | mtan | cross_stitch (default {d.model})")
    g.add_argument("--encoder", default=SUPPRESS, help=f"resnet18 | resnet34 | resnet50 | resnet101 | tu-<timm model name> (default {d.encoder})")
    g.add_argument("--dilation", type=_dilation, default=SUPPRESS, metavar="F,F,T",
                   help=f"replace stride with dilation in layer2,layer3,layer4 (default {format_dilation(d.dilation)})")
    g.add_argument("--dilation-style", default=SUPPRESS, help="template | torchvision: which 3x3 convs a dilated layer "
                   f"dilates (default {d.dilation_style}, the report's network)")
    g.add_argument("--aspp", action=argparse.BooleanOptionalAction, default=SUPPRESS, help="ASPP head (default on)")
    g.add_argument("--skip", action=argparse.BooleanOptionalAction, default=SUPPRESS, help="decoder skip connections (default on)")
    g.add_argument("--se", action=argparse.BooleanOptionalAction, default=SUPPRESS, help="squeeze-excitation in the encoder (default on)")
    g.add_argument("--attention-init", default=SUPPRESS, help=f"zero | default: init of the distillation attention (default {d.attention_init})")
    g.add_argument("--pretrained", default=SUPPRESS, metavar="PATH",
                   help="torchvision-format ResNet state_dict for the encoder: a local path or file:// URL (no downloads)")
    g.add_argument("--aspp-dropout", type=float, default=SUPPRESS, help="dropout after the ASPP projection (default 0)")


_OPT_DEST, _WEIGHT_DEST = "task_opt:", "task_weight:"  # argparse dests of the legacy task flags


def add_task_args(g) -> None:
    """``--task-weight``, ``--task-opt`` and the legacy aliases generated from the tasks' declarations
    (``--weight-semseg`` = ``--task-weight semseg=W``, ``--depth-loss`` = ``--task-opt depth.loss=V``)."""
    g.add_argument("--task-weight", action="append", default=SUPPRESS, metavar="TASK=WEIGHT",
                   help=f"fixed loss weight of a task (repeatable), e.g. normals=1.0 (default {DEFAULT_WEIGHT} each)")
    g.add_argument("--task-opt", action="append", default=SUPPRESS, metavar="TASK.OPTION=VALUE",
                   help="an option of a task (repeatable), e.g. depth.loss=silog; the options: "
                        + "; ".join(f"{t}.{o.name}: {o.help} (default {o.default})"
                                    for t in task_registry.names() for o in task_registry.get(t).options))
    for name in task_registry.names():
        cls = task_registry.get(name)
        if cls.legacy_weight:
            g.add_argument(legacy_flag(cls.legacy_weight), dest=_WEIGHT_DEST + name, type=float, default=SUPPRESS,
                           metavar="W", help=f"= --task-weight {name}=W")
        for opt in cls.options:
            if opt.legacy:
                g.add_argument(legacy_flag(opt.legacy), dest=f"{_OPT_DEST}{name}.{opt.name}", default=SUPPRESS,
                               metavar="VALUE", help=f"= --task-opt {name}.{opt.name}=VALUE")


def _task_fields(args: argparse.Namespace) -> Dict:
    """``task_weights`` / ``task_options`` of the generic task flags and their legacy aliases."""
    given = vars(args)
    weights: Dict[str, float] = {}
    options: Dict[str, Dict] = {}
    for item in given.get("task_weight") or []:
        name, eq, text = item.partition("=")
        name = name.strip()
        try:
            weights[name] = float(text)
        except ValueError:
            eq = ""
        if not eq or not name:
            raise ConfigError(f"--task-weight {item!r}: must look like TASK=WEIGHT, e.g. normals=1.0")
    for item in given.get("task_opt") or []:
        key, eq, value = item.partition("=")
        name, dot, option = key.strip().partition(".")
        if not eq or not dot or not name or not option:
            raise ConfigError(f"--task-opt {item!r}: must look like TASK.OPTION=VALUE, e.g. depth.loss=silog")
        if not task_registry.is_task(name):
            raise ConfigError(f"--task-opt {item}: unknown task {name!r}; valid tasks: {', '.join(task_registry.names())}")
        cls = task_registry.get(name)
        options.setdefault(name, {})[option] = cls.option(option).parse(value, f"--task-opt {name}.{option}")
    for dest, value in given.items():
        if dest.startswith(_WEIGHT_DEST):
            name = dest[len(_WEIGHT_DEST):]
            if name in weights:
                raise ConfigError(f"--task-weight {name}=... and {legacy_flag(task_registry.get(name).legacy_weight)}: "
                                  f"give one of them")
            weights[name] = value
        elif dest.startswith(_OPT_DEST):
            name, _, option = dest[len(_OPT_DEST):].partition(".")
            opt = task_registry.get(name).option(option)
            if option in options.get(name, {}):
                raise ConfigError(f"--task-opt {name}.{option}=... and {legacy_flag(opt.legacy)}: give one of them")
            options.setdefault(name, {})[option] = opt.parse(value, legacy_flag(opt.legacy))
    fields: Dict = {}
    if weights:
        fields["task_weights"] = weights
    if options:
        fields["task_options"] = options
    return fields


def given_config_fields(args: argparse.Namespace) -> Dict:
    """The Config fields among the flags that were given (flags not given are absent: SUPPRESS)."""
    fields = set(Config.__dataclass_fields__)
    values = {k: v for k, v in vars(args).items() if k in fields}
    values.update(_task_fields(args))
    if getattr(args, "weighting_opt", None):
        try:
            values["weighting_opts"] = parse_options(values.get("weighting", "fixed"), args.weighting_opt)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return values


def config_from_args(args: argparse.Namespace) -> Config:
    """A validated Config from the flags that were given over ``--config FILE`` if any (else defaults)."""
    base: Dict = {}
    if getattr(args, "config", None):
        where = f"--config {args.config}"
        try:
            text = Path(args.config).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{where}: cannot be read ({e.strerror or e})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: not UTF-8 text (not a config.json)") from None
        try:
            base = Config.from_json(text, where).to_dict()
        except ValueError as e:  # bad JSON (names the file already), a wrongly typed or unknown field
            raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
    return Config.from_dict(merge_fields(base, given_config_fields(args))).validate()


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = Config()
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=SUPPRESS, help="synthetic | auto | miniscapes | nyuv2 | cityscapes | cityscapes7 | "
                   "cityscapes19: the reader of --data-root (docs/datasets.md; default synthetic)")
    g.add_argument("--data-root", default=SUPPRESS, metavar="DIR",
                   help="dataset folder (default: the built-in synthetic set, generated once into the user cache)")
    g.add_argument("--size", type=size_type, default=SUPPRESS, metavar="HxW", help="training crop (default: 128x256 on GPU, 64x128 on the CPU budget)")
    g.add_argument("--workers", type=int, default=SUPPRESS, help=f"data loader processes (default {d.workers})")
    g.add_argument("--on-bad-sample", default=SUPPRESS, help="error | skip: a broken or inconsistent sample stops "
                   "the run naming the file (default), or is skipped with a warning and counted in summary.json")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default=SUPPRESS, help=f"sgd | adam | adamw (default {d.optimizer})")
    g.add_argument("--lr", type=float, default=SUPPRESS, help=f"learning rate (default {d.lr})")
    g.add_argument("--momentum", type=float, default=SUPPRESS, help=f"SGD momentum (default {d.momentum})")
    g.add_argument("--weight-decay", type=float, default=SUPPRESS, help=f"(default {d.weight_decay})")
    g.add_argument("--batch-size", type=int, default=SUPPRESS, help=f"per process (default {d.batch_size})")
    g.add_argument("--epochs", type=int, default=SUPPRESS, help="epochs (default: 16 on GPU; CPU budget: 200 steps)")
    g.add_argument("--max-steps", type=int, default=SUPPRESS, help="stop after this many optimizer steps")
    add_task_args(p.add_argument_group("tasks' options and weights"))
    g = p.add_argument_group("task weighting (docs/weighting.md)")
    g.add_argument("--weighting", default=SUPPRESS, metavar="NAME",
                   help="fixed (default: --task-weight) | uw | dwa | rlw | gls | famo | imtl_l | "
                        "gradnorm | mgda_ub | pcgrad | cagrad | imtl_g | nash_mtl | aligned_mtl | gradvac | graddrop")
    g.add_argument("--weighting-opt", action="append", default=SUPPRESS, metavar="KEY=VALUE",
                   help="an option of the method over its paper default (repeatable), e.g. temperature=2")
    g.add_argument("--weighting-grads", default=SUPPRESS, metavar="params|rep",
                   help="gradient methods: per-task gradients w.r.t. the shared encoder parameters (default) or "
                        "the shared representation (encoder features; one encoder backward)")
    g = p.add_argument_group("run")
    g.add_argument("--out", default=SUPPRESS, metavar="DIR", help=f"run directory (default {d.out})")
    g.add_argument("--seed", type=int, default=SUPPRESS, help=f"(default {d.seed})")
    g.add_argument("--device", default=SUPPRESS, help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=SUPPRESS, help="torch.compile model and loss")
    g.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=SUPPRESS,
                   help="torch.compile model and loss with mode=reduce-overhead: each step replays CUDA graphs "
                        "(fused ops inside); CUDA only")
    g.add_argument("--fused", action=argparse.BooleanOptionalAction, default=SUPPRESS,
                   help="fused Triton modules (default: on when the kernels can run on the device)")
    g.add_argument("--amp", default=SUPPRESS, help="auto | bf16 | fp16 | off (default auto: bf16 on CUDA, off on CPU)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=SUPPRESS, help="channels_last memory format")
    g.add_argument("--eval-every", type=int, default=SUPPRESS, metavar="STEPS", help="evaluate every N steps (default: every epoch)")
    g.add_argument("--checkpoint-every", type=int, default=SUPPRESS, metavar="STEPS",
                   help="also save last.pt every N steps (default: by time, --checkpoint-minutes)")
    g.add_argument("--checkpoint-minutes", type=float, default=SUPPRESS, metavar="M",
                   help=f"save last.pt after M minutes of training since the last save; 0: off (default "
                        f"{d.checkpoint_minutes}; last.pt is also saved at every evaluation and on Ctrl-C)")
    g.add_argument("--dist-timeout", type=float, default=SUPPRESS, metavar="SECONDS",
                   help="under torchrun: how long a collective waits for the other processes (a dead or hung "
                        "node) before the run fails; longer than an evaluation (default: torch's, 30 min gloo, "
                        "10 min NCCL)")
    g.add_argument("--quiet", action="store_true", default=SUPPRESS, help="log lines instead of a progress bar")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR exactly (its config is used; a larger --max-steps or --epochs "
                        "trains a finished run on)")
    g.add_argument("--overwrite", action="store_true", help="replace the run already in --out (default: refuse)")
    g.add_argument("--config", default=None, metavar="CONFIG_JSON",
                   help="start from a saved config (e.g. a run's config.json); flags given override it")
    g.add_argument("--json", action="store_true", help="print summary.json at the end")
