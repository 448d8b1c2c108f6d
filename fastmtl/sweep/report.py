"""The results of a ``fastmtl sweep``: per variant mean +- std over seeds, as a markdown table,
CSV, JSON and a PNG plot of the ladder (drawn with Pillow).

Metrics are each finished run's ``summary.json`` ``final_all`` (every task metric of the final
evaluation) and ``images_per_second`` (steady-state training throughput); the per-class IoU
(``iou_per_class``) is aggregated the same way into a second table (thin classes, boundaries:
where most ablations act). std is the sample standard deviation (0 for one seed,
where the tables show the mean alone). Params and GMACs are
:mod:`fastmtl.perf.profile`'s counts for the variant's model at its training crop size.
"""
from __future__ import annotations

import csv
import json
import math
import statistics
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from fastmtl.config import Config
from fastmtl.files import read_json
from fastmtl.models import build_model
from fastmtl.perf.profile import count_macs, count_params
from fastmtl.sweep.runner import Sweep
from fastmtl.tasks import get as get_task

HEADLINE = ("miou", "si_log_rmse", "multitask")
LABELS = {"miou": "mIoU", "si_log_rmse": "SI-logRMSE", "multitask": "multitask", "abs_rel": "abs-rel",
          "rmse": "RMSE", "images_per_second": "train img/s"}


def collect(sweep: Sweep) -> Dict[str, Any]:
    """Per-point results of the finished points and per-variant aggregates (``results.json``)."""
    points, variants = [], []
    for name in sweep.variants:
        runs = [p for p in sweep.points if p.variant == name]
        done = []
        for p in runs:
            if p.state() != "done":
                continue
            try:
                s = read_json(p.run_dir / "summary.json", "summary.json")
            except ValueError as e:  # torn by a crash: the point counts as not done
                warnings.warn(f"{e} Point {p.run_dir.name} is left out of the report.")
                continue
            metrics = {k: v for k, v in s["final_all"].items() if isinstance(v, (int, float))}
            metrics["images_per_second"] = s["images_per_second"]
            per_class = s["final_all"].get("iou_per_class", {})
            done.append({"variant": name, "seed": p.seed, "run_dir": str(p.run_dir), "metrics": metrics,
                         "iou_per_class": per_class, "num_classes": len(per_class) or 19})
        points += done
        row: Dict[str, Any] = {"variant": name, "seeds": [d["seed"] for d in done], "of_seeds": len(runs)}
        if done:
            keys = list(dict.fromkeys(k for d in done for k in d["metrics"]))  # a metric some run lacks: over the others
            row["metrics"] = {k: _mean_std([d["metrics"][k] for d in done if k in d["metrics"]]) for k in keys}
            classes = list(done[0]["iou_per_class"])
            if classes:
                row["iou_per_class"] = {c: _mean_std([d["iou_per_class"][c] for d in done]) for c in classes}
            row.update(_model_size(runs[0].run_dir, done[0]["num_classes"]))
        variants.append(row)
    return {"sweep": sweep.name, "folder": str(sweep.folder), "points": points, "variants": variants}


def _mean_std(values: List[float]) -> Dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _model_size(run_dir: Path, num_classes: int) -> Dict[str, Any]:
    """Params and GMACs of the run's model (its config.json) at its training crop size."""
    cfg = Config.from_json((run_dir / "config.json").read_text())
    cfg.pretrained = None  # same architecture; no file needed to count
    model = build_model(cfg, {t: get_task(t).output_channels(num_classes) for t in cfg.tasks}, fused=False)
    macs, _ = count_macs(model, tuple(cfg.size))
    return {"params": count_params(model), "gmacs": macs / 1e9, "gmacs_size": list(cfg.size)}


def metric_columns(results: Dict[str, Any]) -> List[str]:
    """Headline metrics first, then every other metric, throughput last."""
    keys: List[str] = []
    for v in results["variants"]:
        for k in v.get("metrics", {}):
            if k not in keys:
                keys.append(k)
    rest = [k for k in keys if k not in HEADLINE and k != "images_per_second"]
    return [k for k in HEADLINE if k in keys] + rest + (["images_per_second"] if "images_per_second" in keys else [])


def markdown_table(results: Dict[str, Any]) -> str:
    cols = metric_columns(results)
    size = next((v["gmacs_size"] for v in results["variants"] if "gmacs_size" in v), None)
    gmacs = f"GMACs @{size[0]}x{size[1]}" if size else "GMACs"
    head = ["variant", "seeds"] + [LABELS.get(c, c) for c in cols] + ["params (M)", gmacs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in results["variants"]:
        m = v.get("metrics", {})
        cells = [v["variant"], f"{len(v['seeds'])}/{v['of_seeds']}"]
        cells += [_mean_pm_std(m[c], len(v["seeds"]), 2) if c in m else "—" for c in cols]
        cells += [f"{v['params'] / 1e6:.2f}" if "params" in v else "—", f"{v['gmacs']:.3f}" if "gmacs" in v else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_pm_std(stat: Dict[str, float], seeds: int, digits: int) -> str:
    """``40.12 ± 0.31``; the mean alone for one seed (its spread is undefined)."""
    return f"{stat['mean']:.{digits}f}" + (f" ± {stat['std']:.{digits}f}" if seeds > 1 else "")


def class_table(results: Dict[str, Any]) -> str:
    """Markdown table of the per-class IoU (mean ± std over seeds) per variant; '' if none."""
    classes: List[str] = []
    for v in results["variants"]:
        for c in v.get("iou_per_class", {}):
            if c not in classes:
                classes.append(c)
    if not classes:
        return ""
    lines = ["| variant | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
    for v in results["variants"]:
        m = v.get("iou_per_class", {})
        cells = [_mean_pm_std(m[c], len(v["seeds"]), 1) if c in m else "—" for c in classes]
        lines.append("| " + " | ".join([v["variant"]] + cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(results: Dict[str, Any], path: Path) -> None:
    cols = metric_columns(results)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "seeds", "of_seeds"] + [f"{c}_{s}" for c in cols for s in ("mean", "std")]
                   + ["params", "gmacs", "gmacs_size"])
        for v in results["variants"]:
            m = v.get("metrics", {})
            row = [v["variant"], " ".join(map(str, v["seeds"])), v["of_seeds"]]
            row += [m[c][s] if c in m else "" for c in cols for s in ("mean", "std")]
            row += [v.get("params", ""), v.get("gmacs", ""), "x".join(map(str, v.get("gmacs_size", [])))]
            w.writerow(row)


def write_report(results: Dict[str, Any], folder: Path) -> Dict[str, Path]:
    """``results.json``, ``results.csv``, ``results.md`` and ``ladder.png`` in ``folder``."""
    paths = {"json": folder / "results.json", "csv": folder / "results.csv", "md": folder / "results.md",
             "png": folder / "ladder.png"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    write_csv(results, paths["csv"])
    classes = class_table(results)
    paths["md"].write_text(markdown_table(results) + ("\nIoU per class (%):\n\n" + classes if classes else ""))
    plot_ladder(results, paths["png"])
    return paths


# ---------------------------------------------------------------------------------------------
# the plot


def plot_ladder(results: Dict[str, Any], path: Path, metrics: Optional[Tuple[str, ...]] = None) -> None:
    """One panel per metric (default: the :data:`HEADLINE` metrics the runs have, e.g. no SI-logRMSE
    without depth), one horizontal bar per variant (mean) with a +- std whisker."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    rows = results["variants"]
    if metrics is None:
        metrics = tuple(k for k in HEADLINE if any(k in r.get("metrics", {}) for r in rows)) or HEADLINE
    label_w = 8 + 7 * max([len(r["variant"]) for r in rows] + [8])
    panel_w, row_h, top = 260, 22, 40
    width = label_w + panel_w * len(metrics) + 20
    height = top + row_h * len(rows) + 30
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((8, 6), f"fastmtl sweep {results['sweep']}: mean ± std over seeds", fill="black", font=font)
    for i, r in enumerate(rows):
        d.text((8, top + i * row_h + 5), r["variant"], fill="black", font=font)
    for j, key in enumerate(metrics):
        x0 = label_w + j * panel_w + 10
        x1 = x0 + panel_w - 30
        stats = [r.get("metrics", {}).get(key) for r in rows]
        values = [s["mean"] + sgn * s["std"] for s in stats if s for sgn in (-1, 1)]
        lo, hi = min(values + [0.0]), max(values + [0.0])
        if hi - lo < 1e-9:
            hi = lo + 1.0
        span = hi - lo  # room for the value labels beyond the bars
        lo, hi = lo - 0.2 * span * (lo < 0), hi + 0.2 * span * (hi > 0)

        def x(v: float) -> float:
            return x0 + (v - lo) / (hi - lo) * (x1 - x0)

        d.text((x0, top - 18), LABELS.get(key, key) + (" (lower is better)" if key == "si_log_rmse" else ""),
               fill="black", font=font)
        d.line([(x(0), top - 4), (x(0), top + row_h * len(rows))], fill="gray")
        for i, s in enumerate(stats):
            y = top + i * row_h
            if not s or not math.isfinite(s["mean"]):
                d.text((x0, y + 5), "not run", fill="gray", font=font)
                continue
            d.rectangle([min(x(0), x(s["mean"])), y + 4, max(x(0), x(s["mean"])), y + row_h - 4],
                        fill=(70, 130, 180))
            a, b = x(s["mean"] - s["std"]), x(s["mean"] + s["std"])
            d.line([(a, y + row_h / 2), (b, y + row_h / 2)], fill="black", width=2)
            d.line([(a, y + 6), (a, y + row_h - 6)], fill="black")
            d.line([(b, y + 6), (b, y + row_h - 6)], fill="black")
            text = f"{s['mean']:.1f}"
            left = min(x(s["mean"]), a) - 3 - d.textlength(text, font=font)
            d.text((max(x(s["mean"]), b) + 3 if s["mean"] >= 0 else left, y + 5), text, fill="black", font=font)
        d.text((x(0) - 3, top + row_h * len(rows) + 6), "0", fill="gray", font=font)
    img.save(path, format="PNG")
