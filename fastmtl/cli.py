"""The ``fastmtl`` command: parses flags into a :class:`~fastmtl.config.Config` and calls one
function per subcommand. No logic of its own beyond argument handling and error reporting.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Dict, List, Optional

from .config import Config, ConfigError, format_dilation, parse_dilation, parse_size
from .errors import TrainingDiverged

_SUPPRESS = argparse.SUPPRESS


def _dilation(text: str):
    try:
        return parse_dilation(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _size(text: str):
    try:
        return parse_size(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _tasks(text: str):
    from .tasks import parse_tasks

    try:
        return parse_tasks(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model knobs the report varies (defaults: the report's best recipe)."""
    d = Config()
    g = p.add_argument_group("model")
    g.add_argument("--tasks", type=_tasks, default=_SUPPRESS, metavar="LIST",
                   help=f"comma-separated tasks, one head each: semseg, depth, normals (default {','.join(d.tasks)})")
    g.add_argument("--model", default=_SUPPRESS, help=f"joint | branched | distill | distill_allconnect (default {d.model})")
    g.add_argument("--encoder", default=_SUPPRESS, help=f"resnet18 | resnet34 | resnet50 | resnet101 (default {d.encoder})")
    g.add_argument("--dilation", type=_dilation, default=_SUPPRESS, metavar="F,F,T",
                   help=f"replace stride with dilation in layer2,layer3,layer4 (default {format_dilation(d.dilation)})")
    g.add_argument("--dilation-style", default=_SUPPRESS, help="template | torchvision: which 3x3 convs a dilated layer "
                   f"dilates (default {d.dilation_style}, the report's network)")
    g.add_argument("--aspp", action=argparse.BooleanOptionalAction, default=_SUPPRESS, help="ASPP head (default on)")
    g.add_argument("--skip", action=argparse.BooleanOptionalAction, default=_SUPPRESS, help="decoder skip connections (default on)")
    g.add_argument("--se", action=argparse.BooleanOptionalAction, default=_SUPPRESS, help="squeeze-excitation in the encoder (default on)")
    g.add_argument("--attention-init", default=_SUPPRESS, help=f"zero | default: init of the distillation attention (default {d.attention_init})")
    g.add_argument("--pretrained", default=_SUPPRESS, metavar="PATH",
                   help="torchvision-format ResNet state_dict for the encoder: a local path or file:// URL (no downloads)")
    g.add_argument("--aspp-dropout", type=float, default=_SUPPRESS, help="dropout after the ASPP projection (default 0)")


def given_config_fields(args: argparse.Namespace) -> Dict:
    """The Config fields among the flags that were given (flags not given are absent: SUPPRESS)."""
    fields = set(Config.__dataclass_fields__)
    values = {k: v for k, v in vars(args).items() if k in fields}
    for item in getattr(args, "task_weight", None) or []:
        name, eq, text = item.partition("=")
        name = name.strip()
        try:
            weight = float(text)
        except ValueError:
            weight = None
        if not eq or not name or weight is None:
            raise ConfigError(f"--task-weight {item!r}: must look like TASK=WEIGHT, e.g. normals=1.0")
        if name in ("semseg", "depth"):
            if f"weight_{name}" in vars(args):
                raise ConfigError(f"--task-weight {name}=... and --weight-{name}: give one of them")
            values[f"weight_{name}"] = weight
        else:
            values.setdefault("task_weights", {})[name] = weight
    if getattr(args, "weighting_opt", None):
        from .weighting import parse_options

        try:
            values["weighting_opts"] = parse_options(values.get("weighting", "fixed"), args.weighting_opt)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return values


def config_from_args(args: argparse.Namespace) -> Config:
    """A validated Config from the flags that were given over ``--config FILE`` if any (else defaults)."""
    base: Dict = {}
    if getattr(args, "config", None):
        try:
            base = Config.from_json(open(args.config).read()).to_dict()
        except OSError as e:
            raise ConfigError(f"--config {args.config}: cannot be read ({e.strerror or e})") from None
        except ValueError as e:  # bad JSON or unknown fields
            raise ConfigError(f"--config {args.config}: {e}") from None
    return Config.from_dict({**base, **given_config_fields(args)}).validate()


def cmd_profile(args: argparse.Namespace) -> int:
    from .perf.profile import format_profile, profile_model
    from .runtime import resolve_device

    cfg = config_from_args(args)
    h, w = args.profile_size
    if h % cfg.output_stride or w % cfg.output_stride:
        raise ConfigError(f"--size {h}x{w}: height and width must be multiples of {cfg.output_stride} (the output stride)")
    result = profile_model(cfg, (h, w), depth=args.depth, throughput=args.throughput,
                           device=str(resolve_device(args.device)), batch_size=args.batch_size,
                           num_classes=args.num_classes)
    result["model"] = cfg.model
    print(json.dumps(result) if args.json else format_profile(result))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    if args.resume:
        for flag, value in (("--config", args.config), ("--overwrite", args.overwrite)):
            if value:
                raise ConfigError(f"{flag} cannot be used with --resume (a resumed run keeps its own config and files)")
        summary = train(None, resume=args.resume, resume_overrides=given_config_fields(args))
    else:
        summary = train(config_from_args(args), overwrite=args.overwrite)
    if summary is not None and args.json:
        print(json.dumps(summary))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_checkpoint
    from .runtime import resolve_device

    metrics = evaluate_checkpoint(args.checkpoint, args.data_root, args.split, str(resolve_device(args.device)),
                                  workers=args.workers, batch_size=args.batch_size, on_bad_sample=args.on_bad_sample)
    if args.json:
        print(json.dumps(metrics))
        return 0
    per_class = metrics.pop("iou_per_class", None)  # runs with semseg
    for k, v in metrics.items():
        print(f"{k:20s} {v:8.3f}")
    if per_class is not None:
        print(f"\n{'class':14s} {'IoU %':>8s}")
        for name, iou in per_class.items():
            print(f"{name:14s} {iou:8.2f}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, format_table

    report = compare(args.runs, args.baseline, args.at)
    print(json.dumps(report) if args.json else format_table(report))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict
    from .runtime import resolve_device

    written = predict(args.checkpoint, args.inputs, args.out, str(resolve_device(args.device)))
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    path = export(args.checkpoint, args.out or f"model.{'onnx' if args.format == 'onnx' else 'pt'}", args.format)
    print(f"wrote {path}")
    return 0


def cmd_data_synthetic(args: argparse.Namespace) -> int:
    from .data.synthetic import generate_dataset

    if args.train < 1 or args.val < 1:
        raise ConfigError("--train and --val must be >= 1")
    h, w = args.size
    if h < 16 or w < 16:
        raise ConfigError(f"--size {h}x{w}: at least 16x16")
    path = generate_dataset(args.out, train=args.train, val=args.val, size=args.size, seed=args.seed,
                            workers=args.workers, progress=not args.quiet)
    print(f"wrote the synthetic dataset to {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .perf.cases import IMPLS, MODES, OPS, parse_list
    from .perf.op_bench import BenchOptions, run_bench
    from .perf.report import format_report
    from .runtime import resolve_device

    if args.models:
        return _bench_models(args)
    opts = BenchOptions(ops=parse_list(args.ops, OPS, "ops"), modes=parse_list(args.modes, MODES, "modes"),
                        impls=parse_list(args.impls, IMPLS, "impls") if args.impls else None,
                        size=args.bench_size, device=str(resolve_device(args.device)), dtype=args.dtype,
                        progress=sys.stderr.isatty())
    report = run_bench(opts)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _bench_models(args: argparse.Namespace) -> int:
    from .perf.cases import IMPLS, parse_list
    from .perf.model_bench import MODEL_PHASES, format_model_report, run_model_bench
    from .models import MODEL_NAMES
    from .runtime import resolve_device

    report = run_model_bench(parse_list(args.models, ("default",) + tuple(MODEL_NAMES), "models"), parse_list(args.phases, MODEL_PHASES, "phases"),
                             parse_list(args.impls, IMPLS, "impls") if args.impls else None,
                             str(resolve_device(args.device)), size=args.bench_size, steps=args.steps,
                             progress=sys.stderr.isatty())
    print(json.dumps(report) if args.json else format_model_report(report))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep.runner import open_sweep, run_sweep, user_command
    from .sweep.builtin import builtin_sweep
    from .sweep.report import collect, write_report

    overrides: Dict = {}
    for flag, key in (("steps", "max_steps"), ("size", "size"), ("encoder", "encoder"), ("batch_size", "batch_size"),
                      ("seeds", "seeds"), ("pretrained", "pretrained")):
        if flag == "pretrained" and builtin_sweep(args.sweep) is not None:
            continue  # a built-in sweep places it (report-ladder: from its ImageNet-init step on)
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if "size" in overrides:
        overrides["size"] = list(overrides["size"])
    for item in args.set or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--set {item!r}: must look like KEY=VALUE (a JSON value or text), e.g. lr=3e-4")
        try:
            overrides[key.strip()] = json.loads(value)
        except ValueError:
            overrides[key.strip()] = value
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    sweep = open_sweep(args.sweep, args.out, overrides, lambda name: builtin_sweep(name, args.pretrained))
    if args.print_commands:
        for p in sweep.points:
            if p.state() != "done":
                print(user_command(p))
        return 0
    print(f"sweep {sweep.name}: {len(sweep.points)} runs ({len(sweep.variants)} variants) in {sweep.folder}", flush=True)
    failed = [] if args.report_only else run_sweep(sweep, jobs=args.jobs, echo=lambda line: print(line, flush=True))
    results = collect(sweep)
    paths = write_report(results, sweep.folder)
    print()
    print(paths["md"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if failed:
        print(f"fastmtl sweep: error: {len(failed)} runs failed: "
              + "; ".join(f"{p.label} (log {p.run_dir / 'train.log'})" for p in failed), file=sys.stderr)
        return 1
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import collect, format_report

    report = collect()
    print(json.dumps(report) if args.json else format_report(report))
    return 0 if report["ok"] else 1


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = Config()
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=_SUPPRESS, help="synthetic | auto | miniscapes | nyuv2 | cityscapes | cityscapes7 | "
                   "cityscapes19: the reader of --data-root (README: Datasets; default synthetic)")
    g.add_argument("--data-root", default=_SUPPRESS, metavar="DIR",
                   help="dataset folder (default: the built-in synthetic set, generated once into the user cache)")
    g.add_argument("--size", type=_size, default=_SUPPRESS, metavar="HxW", help="training crop (default: 128x256 on GPU, 64x128 on the CPU budget)")
    g.add_argument("--depth-norm", default=_SUPPRESS, help=f"linear | log (default {d.depth_norm})")
    g.add_argument("--workers", type=int, default=_SUPPRESS, help=f"data loader processes (default {d.workers})")
    g.add_argument("--on-bad-sample", default=_SUPPRESS, help="error | skip: a broken or inconsistent sample stops "
                   "the run naming the file (default), or is skipped with a warning and counted in summary.json")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default=_SUPPRESS, help=f"sgd | adam | adamw (default {d.optimizer})")
    g.add_argument("--lr", type=float, default=_SUPPRESS, help=f"learning rate (default {d.lr})")
    g.add_argument("--momentum", type=float, default=_SUPPRESS, help=f"SGD momentum (default {d.momentum})")
    g.add_argument("--weight-decay", type=float, default=_SUPPRESS, help=f"(default {d.weight_decay})")
    g.add_argument("--batch-size", type=int, default=_SUPPRESS, help=f"per process (default {d.batch_size})")
    g.add_argument("--epochs", type=int, default=_SUPPRESS, help="epochs (default: 16 on GPU; CPU budget: 200 steps)")
    g.add_argument("--max-steps", type=int, default=_SUPPRESS, help="stop after this many optimizer steps")
    g.add_argument("--weight-semseg", type=float, default=_SUPPRESS, help=f"task weight (default {d.weight_semseg})")
    g.add_argument("--weight-depth", type=float, default=_SUPPRESS, help=f"task weight (default {d.weight_depth})")
    g.add_argument("--depth-loss", default=_SUPPRESS, help=f"l1 | l2 | silog (default {d.depth_loss})")
    g.add_argument("--task-weight", action="append", default=_SUPPRESS, metavar="TASK=WEIGHT",
                   help="fixed loss weight of any task (repeatable), e.g. normals=1.0; semseg=/depth= set "
                        "--weight-semseg/--weight-depth (default 0.5 each)")
    g.add_argument("--normals-loss", default=_SUPPRESS, help=f"cosine | l1 (default {d.normals_loss})")
    g = p.add_argument_group("task weighting (README: Task weighting)")
    g.add_argument("--weighting", default=_SUPPRESS, metavar="NAME",
                   help="fixed (default: --weight-semseg/--weight-depth) | uw | dwa | rlw | gls | famo | imtl_l | "
                        "gradnorm | mgda_ub | pcgrad | cagrad | imtl_g | nash_mtl | aligned_mtl | gradvac | graddrop")
    g.add_argument("--weighting-opt", action="append", default=_SUPPRESS, metavar="KEY=VALUE",
                   help="an option of the method over its paper default (repeatable), e.g. temperature=2")
    g.add_argument("--weighting-grads", default=_SUPPRESS, metavar="params|rep",
                   help="gradient methods: per-task gradients w.r.t. the shared encoder parameters (default) or "
                        "the shared representation (encoder features; one encoder backward)")
    g = p.add_argument_group("run")
    g.add_argument("--out", default=_SUPPRESS, metavar="DIR", help=f"run directory (default {d.out})")
    g.add_argument("--seed", type=int, default=_SUPPRESS, help=f"(default {d.seed})")
    g.add_argument("--device", default=_SUPPRESS, help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=_SUPPRESS, help="torch.compile model and loss")
    g.add_argument("--fused", action=argparse.BooleanOptionalAction, default=_SUPPRESS,
                   help="fused Triton modules (default: on when the kernels can run on the device)")
    g.add_argument("--amp", default=_SUPPRESS, help="auto | bf16 | fp16 | off (default auto: bf16 on CUDA, off on CPU)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=_SUPPRESS, help="channels_last memory format")
    g.add_argument("--eval-every", type=int, default=_SUPPRESS, metavar="STEPS", help="evaluate every N steps (default: every epoch)")
    g.add_argument("--quiet", action="store_true", default=_SUPPRESS, help="log lines instead of a progress bar")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR exactly (its config is used; a larger --max-steps or --epochs "
                        "trains a finished run on)")
    g.add_argument("--overwrite", action="store_true", help="replace the run already in --out (default: refuse)")
    g.add_argument("--config", default=None, metavar="CONFIG_JSON",
                   help="start from a saved config (e.g. a run's config.json); flags given override it")
    g.add_argument("--json", action="store_true", help="print summary.json at the end")


def build_parser(commands: Dict[str, Callable]) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fastmtl", description="Multi-task semantics + depth with fused Triton kernels.")
    parser.add_argument("--version", action="version", version=f"fastmtl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", help="train a model (default: the report's best recipe on the built-in dataset)")
    add_model_args(p)
    add_train_args(p)
    p.set_defaults(func=commands["train"])

    p = sub.add_parser("eval", help="evaluate a checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a .pt file or a run directory (best.pt)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="default: the checkpoint's dataset")
    p.add_argument("--split", default="val", help="split folder to evaluate (default val)")
    p.add_argument("--device", default="auto", help="default: cuda if available")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--on-bad-sample", choices=("error", "skip"), default="error", help="as for train")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=commands["eval"])

    p = sub.add_parser("predict", help="per image: each task's raw result and picture, and a panel PNG")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a .pt file or a run directory (best.pt)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=commands["predict"])

    p = sub.add_parser("compare", help="every metric of every task of several runs, and Δm against a baseline run")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (their summary.json)")
    p.add_argument("--baseline", required=True, action="append", metavar="RUN_DIR",
                   help="the run Δm is measured against; repeat it for runs that together have each task once "
                        "(e.g. single-task runs)")
    p.add_argument("--at", choices=("final", "best"), default="final",
                   help="the final evaluation (default) or each run's best step (metrics.jsonl)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=commands["compare"])

    p = sub.add_parser("export", help="a checkpoint as an ONNX or TorchScript file (one output per task: semseg logits, depth in m, unit normals)")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a .pt file or a run directory (best.pt)")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p.add_argument("--out", default=None, metavar="FILE", help="default: model.onnx or model.pt")
    p.set_defaults(func=commands["export"])

    p = sub.add_parser("data", help="datasets")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data_sub.required = True
    q = data_sub.add_parser("synthetic", help="render the procedural street-scene dataset")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--train", type=int, default=2000, help="train images (default 2000)")
    q.add_argument("--val", type=int, default=250, help="val images (default 250)")
    q.add_argument("--size", type=_size, default=(128, 256), metavar="HxW", help="image size (default 128x256)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=commands["data_synthetic"])

    p = sub.add_parser("profile", help="parameters, GMACs and throughput of a model")
    add_model_args(p)
    p.add_argument("--size", dest="profile_size", type=_size, default=(256, 256), metavar="HxW", help="input size (default 256x256)")
    p.add_argument("--num-classes", type=int, default=19, help="semantic classes (default 19)")
    p.add_argument("--depth", type=int, default=0, metavar="N", help="per-module breakdown N levels deep")
    p.add_argument("--throughput", action="store_true", help="also measure forward and train-step images/s")
    p.add_argument("--device", default="auto", help="device for --throughput (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=2, help="batch for --throughput (default 2)")
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), default="off", help="autocast for --throughput")
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=False, help="fused Triton modules")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=commands["profile"])

    p = sub.add_parser("bench", help="time the fused ops against eager and torch.compile references")
    p.add_argument("--ops", default="se_scale,sigmoid_gate,aspp,silog", help="comma-separated ops (default: all four)")
    p.add_argument("--modes", default="forward,backward,full", help="comma-separated passes (default: all three)")
    p.add_argument("--impls", default=None, metavar="LIST",
                   help="eager,compile,fused,fused_compile (default: all on CUDA, eager on CPU; fused rows need CUDA)")
    p.add_argument("--size", dest="bench_size", default=None, metavar="small|full",
                   help="full: batch 8 at 256x512 (default on CUDA); small: batch 2 at 64x128 (default on CPU)")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="activation dtype (default auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--device", default="auto", help="default: cuda if available")
    p.add_argument("--models", default=None, metavar="LIST",
                   help="time whole models instead of the ops: comma-separated model names or 'default' "
                        "(images/s and peak CUDA memory per --impls; --size tiny|small|full)")
    p.add_argument("--phases", default="train", metavar="LIST", help="with --models: train,inference (default train)")
    p.add_argument("--steps", type=int, default=None, help="with --models: timed calls per row (default 10 on CUDA, 3 on CPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=commands["bench"])

    p = sub.add_parser("sweep", help="many train runs from a sweep file (or a built-in sweep), resumable; one table")
    p.add_argument("sweep", metavar="SWEEP", help="a sweep file (.json / .toml), a built-in sweep (report-ladder, "
                   "report-hparams) or a sweep folder to continue")
    p.add_argument("--out", default=None, metavar="DIR", help="sweep folder (default sweeps/NAME)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (one GPU each on a multi-GPU machine; default 1)")
    p.add_argument("--print-commands", action="store_true", help="print one fastmtl train command per run not done; run nothing")
    p.add_argument("--report-only", action="store_true", help="write the table, CSV, JSON and plot of the runs "
                   "finished so far; run nothing")
    p.add_argument("--steps", type=int, default=None, help="--max-steps of every run")
    p.add_argument("--size", type=_size, default=None, metavar="HxW", help="--size of every run")
    p.add_argument("--encoder", default=None, help="--encoder of every run")
    p.add_argument("--batch-size", type=int, default=None, help="--batch-size of every run")
    p.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=None, metavar="0,1,2",
                   help="seeds (replaces the sweep's)")
    p.add_argument("--pretrained", default=None, metavar="PATH", help="encoder weights of every run (report-ladder: "
                   "adds the ImageNet-init step)")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="any config field for every run (repeatable), e.g. --set eval_every=400 --set workers=0")
    p.set_defaults(func=commands["sweep"])

    p = sub.add_parser("doctor", help="device, versions, kernel mode and the self-check of every fused op")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=commands["doctor"])
    from .perf.aot.cli import add_commands as add_aot_commands  # fastmtl gate, fastmtl traffic
    add_aot_commands(sub)
    return parser


COMMANDS: Dict[str, Callable] = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "export": cmd_export,
                                  "compare": cmd_compare,
                                  "profile": cmd_profile,
                                  "data_synthetic": cmd_data_synthetic, "bench": cmd_bench}
COMMANDS["doctor"] = cmd_doctor
COMMANDS["sweep"] = cmd_sweep


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser(COMMANDS)
    args = parser.parse_args(argv)
    if os.environ.get("FASTMTL_PARSE_ONLY") == "1":  # the flags parse; run nothing (gpu_check.sh --dry-run)
        return 0
    try:
        return args.func(args)
    except (ValueError, OSError, TrainingDiverged) as e:  # ConfigError, bad files, paths, a diverged run
        print(f"fastmtl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastmtl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
