"""``fastmtl eval``: every metric of a checkpoint on a split (a progress bar only on a terminal)."""
from __future__ import annotations

import argparse
import json

from ..metrics import METRIC_STYLES
from ..runtime import resolve_device
from .flags import count_type

HELP = 'evaluate a checkpoint'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a .pt file or a run directory (best.pt)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="default: the checkpoint's dataset")
    p.add_argument("--split", default="val", help="split folder to evaluate (default val)")
    p.add_argument("--device", default="auto", help="default: cuda if available")
    p.add_argument("--batch-size", type=count_type(1), default=None, help="default: the run's")
    p.add_argument("--workers", type=count_type(0), default=2)
    p.add_argument("--on-bad-sample", choices=("error", "skip"), default="error", help="as for train")
    p.add_argument("--metric-style", choices=METRIC_STYLES, default="libmtl",
                   help="libmtl (default, as training: over every pixel of the split) or mtan (per-batch means "
                        "averaged, as the MTAN / Nash-MTL code; batch size 2 unless --batch-size)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.data_root, args.split, str(resolve_device(args.device)),
                                  workers=args.workers, batch_size=args.batch_size, on_bad_sample=args.on_bad_sample, metric_style=args.metric_style)
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
