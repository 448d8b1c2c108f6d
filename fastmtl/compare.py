"""``fastmtl compare RUN... --baseline RUN``: every metric of every task of several runs, and Δm.

A run is a run directory of ``fastmtl train`` (``config.json``, ``summary.json``; ``metrics.jsonl``
for ``--at best``). Its metrics are ``summary.json``'s ``final_all`` (``--at final``, the default)
or the ``metrics.jsonl`` record of its best step (``--at best``). With ``--metric-style mtan``
the metrics are recomputed instead, MTAN / Nash-MTL style (:mod:`fastmtl.evaluate`), from the run's
``last.pt`` (``--at final``) or ``best.pt`` (``--at best``) on its validation split.

Δm (Maninis et al. 2019; LibMTL's sign) over the ``K`` metrics of the tasks'
:attr:`~fastmtl.tasks.Task.delta_m_metrics` (LibMTL's NYUv2 set: semseg mIoU, pixel accuracy;
depth abs err, rel err; normals mean, median, % < 11.25, 22.5, 30)::

    Δm = 100 / K * sum_k (-1)^l_k * (M_k - B_k) / B_k,   l_k = 1 when lower is better

with ``B`` the baseline's metrics, so a better run has Δm > 0 (``delta_m_sign="higher-better"``,
the default). The MTAN, CAGrad, Nash-MTL and FAMO tables print the opposite sign, ``Δm% ↓``
(``l_k = 1`` when *higher* is better: a better run has Δm < 0); ``delta_m_sign="lower-better"``
(``--delta-m-sign lower-better``) reports that, ``-Δm``. The baseline is one run with the
same tasks, or several runs that together have each task once (single-task runs, the usual
baseline of Maninis et al.), each giving its own tasks' metrics. ``delta_m_per_task`` is
LibMTL's ``count_improvement`` (``LibMTL/utils.py``): the same terms averaged per task first, then
over tasks (x 100); the two agree when every task has the same number of metrics.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .evaluate import evaluate_checkpoint
from .files import read_jsonl
from .metrics import METRIC_STYLES
from .tasks import DEFAULT_TASKS, get

AT = ("final", "best")
DELTA_M_SIGNS = {"higher-better": 1.0, "lower-better": -1.0}  # Maninis / LibMTL; MTAN / CAGrad / Nash-MTL / FAMO


class CompareError(ValueError):
    """A run that cannot be compared; the message names the run and what is wrong."""


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise CompareError(f"{path}: cannot be read ({e.strerror or e})") from None
    except ValueError as e:
        raise CompareError(f"{path}: not valid JSON ({e}); is {what} complete?") from None


def recomputed_metrics(path: Path, at: str, metric_style: str, device: str) -> Dict:
    """The run's metrics evaluated again in ``metric_style`` from ``last.pt`` (final) or ``best.pt`` (best)."""
    checkpoint = path / ("last.pt" if at == "final" else "best.pt")
    if not checkpoint.is_file():
        raise CompareError(f"{path}: no {checkpoint.name} to evaluate with --metric-style {metric_style}")
    return evaluate_checkpoint(str(checkpoint), device=device, workers=0, metric_style=metric_style)


def load_run(run_dir: str, at: str = "final", metric_style: str = "libmtl", device: str = "cpu") -> Dict:
    """``{"dir", "tasks", "dataset", "metrics"}`` of one run directory (scalar metrics only); with
    ``metric_style="mtan"`` evaluated again from its checkpoint on ``device``."""
    if at not in AT:
        raise CompareError(f"--at: unknown value {at!r}; valid choices: {', '.join(AT)}")
    if metric_style not in METRIC_STYLES:
        raise CompareError(f"--metric-style: unknown value {metric_style!r}; valid choices: {', '.join(METRIC_STYLES)}")
    path = Path(run_dir)
    if not path.is_dir():
        raise CompareError(f"{path}: no such run directory")
    if not (path / "config.json").is_file():
        raise CompareError(f"{path}: no config.json (not a fastmtl run directory)")
    if not (path / "summary.json").is_file():
        raise CompareError(f"{path}: no summary.json (the run has not finished; train it to the end or "
                           f"--resume it)")
    config = _read_json(path / "config.json", "the run's config")
    summary = _read_json(path / "summary.json", "the run's summary")
    if metric_style != "libmtl":
        record = recomputed_metrics(path, at, metric_style, device)
    elif at == "final":
        record = summary.get("final_all")
    else:
        step = (summary.get("best") or {}).get("step")
        try:  # a last line torn by a crash is dropped with a warning
            records = read_jsonl(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
        except ValueError as e:
            raise CompareError(str(e)) from None
        record = next((r for r in records if r.get("step") == step), None)
    if not isinstance(record, dict):
        raise CompareError(f"{path}: no {at} metrics in {'summary.json' if at == 'final' else 'metrics.jsonl'}")
    root = config.get("data_root")
    return {
        "dir": str(path),
        "tasks": tuple(config.get("tasks", DEFAULT_TASKS)),
        "dataset": (config.get("dataset", "synthetic"), str(Path(root).resolve()) if root else "built-in"),
        "metrics": {k: float(v) for k, v in record.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch", "lr")},
    }


def delta_m(metrics: Dict[str, float], baseline: Dict[str, float],
            directions: Dict[str, Dict[str, int]]) -> Tuple[Optional[float], Optional[float], str]:
    """``(Δm over metrics, Δm per task (LibMTL), why None)`` in percent.

    ``directions``: ``{task: {metric: +1 higher better / -1 lower better}}`` of the metrics that count.
    Δm is None (with the reason) when a metric is missing or the baseline's is 0.
    """
    per_task: List[List[float]] = []
    for task, metric_dirs in directions.items():
        terms = []
        for m, sign in metric_dirs.items():
            if m not in metrics or m not in baseline:
                return None, None, f"{m} ({task}) missing"
            b = baseline[m]
            if b == 0 or not math.isfinite(b) or not math.isfinite(metrics[m]):
                return None, None, f"{m} ({task}) is {metrics[m]} with baseline {b}"
            terms.append(sign * (metrics[m] - b) / b)
        per_task.append(terms)
    flat = [t for terms in per_task for t in terms]
    if not flat:
        return None, None, "no metric counts"
    over_metrics = 100.0 * sum(flat) / len(flat)
    over_tasks = 100.0 * sum(sum(t) / len(t) for t in per_task) / len(per_task)
    return over_metrics, over_tasks, ""


def _labels(dirs: Sequence[str]) -> List[str]:
    names = [Path(d).name or d for d in dirs]
    return [d if names.count(n) > 1 else n for n, d in zip(names, dirs)]


def _same_dataset(a: Dict, b: Dict) -> None:
    if a["dataset"] != b["dataset"]:
        raise CompareError(f"runs are on different datasets: {a['dir']} on {a['dataset'][0]} ({a['dataset'][1]}), "
                           f"{b['dir']} on {b['dataset'][0]} ({b['dataset'][1]})")


def combined_baseline(bases: Sequence[Dict], label: str) -> Dict:
    """One baseline from several runs that each cover some of the tasks (e.g. single-task runs):
    every task must come from exactly one of them; each gives its own tasks' metrics."""
    owner: Dict[str, str] = {}
    metrics: Dict[str, float] = {}
    for base in bases:
        _same_dataset(bases[0], base)
        for t in base["tasks"]:
            if t in owner:
                raise CompareError(f"--baseline: task {t} is in two baselines, {owner[t]} and {base['dir']}")
            owner[t] = base["dir"]
            metrics.update({m: v for m, v in base["metrics"].items() if m in get(t).metric_directions})
    return {"dir": label, "tasks": tuple(owner), "dataset": bases[0]["dataset"], "metrics": metrics}


def compare(run_dirs: Sequence[str], baseline_dirs, at: str = "final", delta_m_sign: str = "higher-better",
            metric_style: str = "libmtl", device: str = "cpu") -> Dict:
    """The comparison report (what ``--json`` prints): tasks, dataset, the metrics that count in Δm
    with their directions, ``delta_m_sign``, and per run its metrics, ``delta_m``, ``delta_m_per_task``
    (with the sign ``delta_m_sign`` names: ``higher-better`` or ``lower-better``, see the module docstring).
    ``metric_style``: ``libmtl`` (the runs' recorded metrics) or ``mtan`` (evaluated again on ``device``).

    ``baseline_dirs``: one run directory (with the runs' tasks), or several that together have
    each of the runs' tasks once (e.g. one single-task run per task: the usual Δm baseline)."""
    if delta_m_sign not in DELTA_M_SIGNS:
        raise CompareError(f"--delta-m-sign: unknown value {delta_m_sign!r}; valid choices: {', '.join(DELTA_M_SIGNS)}")
    sign = DELTA_M_SIGNS[delta_m_sign]
    baseline_dirs = [baseline_dirs] if isinstance(baseline_dirs, (str, Path)) else list(baseline_dirs)
    bases = [load_run(d, at, metric_style, device) for d in baseline_dirs]
    is_base = {Path(d).resolve() for d in baseline_dirs}
    others = [d for d in run_dirs if Path(d).resolve() not in is_base]
    labels = _labels(baseline_dirs + others)
    base_label = " + ".join(labels[:len(bases)])
    base = bases[0] if len(bases) == 1 else combined_baseline(bases, base_label)
    runs = [base] + [load_run(d, at, metric_style, device) for d in others]
    for run in runs[1:]:
        if set(run["tasks"]) != set(base["tasks"]):
            raise CompareError(f"runs have different tasks: {base['dir']} has {','.join(base['tasks'])}, "
                               f"{run['dir']} has {','.join(run['tasks'])}")
        _same_dataset(base, run)
    tasks = [get(t) for t in (runs[1]["tasks"] if len(runs) > 1 else base["tasks"])]
    counted = {t.name: {m: t.metric_directions[m] for m in t.delta_m_metrics} for t in tasks}
    report_runs = []
    for label, run in zip([base_label] + labels[len(bases):], runs):
        dm, dm_tasks, why = delta_m(run["metrics"], base["metrics"], counted)
        entry = {"label": label, "dir": run["dir"], "baseline": run is base, "metrics": run["metrics"],
                 "delta_m": None if dm is None else sign * dm + 0.0,
                 "delta_m_per_task": None if dm_tasks is None else sign * dm_tasks + 0.0}
        if why:
            entry["delta_m_missing"] = why
        report_runs.append(entry)
    return {"at": at, "metric_style": metric_style, "tasks": [t.name for t in tasks], "dataset": list(base["dataset"]),
            "baseline": base_label, "baseline_dirs": [b["dir"] for b in bases], "delta_m_metrics": counted,
            "delta_m_sign": delta_m_sign, "runs": report_runs}


def metric_rows(report: Dict) -> List[Tuple[str, str, str, int]]:
    """``(task, metric, direction arrow, counts in Δm)`` of every metric of the comparison, task by task."""
    seen = set()
    rows = []
    present = set().union(*(r["metrics"] for r in report["runs"]))
    for name in report["tasks"]:
        task = get(name)
        for m, sign in task.metric_directions.items():
            if m in present:
                rows.append((name, m, "↑" if sign > 0 else "↓", int(m in report["delta_m_metrics"][name])))
                seen.add(m)
    if "multitask" in present:
        rows.append(("", "multitask", "↑", 0))
        seen.add("multitask")
    rows += [("", m, "", 0) for m in sorted(present - seen)]
    return rows


def format_table(report: Dict) -> str:
    """The comparison as a plain-text table: one row per metric (``*`` = counts in Δm), one column per run."""
    labels = [r["label"] + (" (baseline)" if r["baseline"] else "") for r in report["runs"]]
    rows = metric_rows(report)
    names = [f"{task + ' ' if task else ''}{m}{' *' if counts else ''}" for task, m, _, counts in rows]
    first = max([len(n) for n in names] + [len("Δm % (per task)")]) + 2
    widths = [max(len(lb), 9) + 2 for lb in labels]

    def line(name, arrow, cells):
        return f"{name:<{first}}{arrow:<3}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths))

    out = [line("metric", "", labels)]
    for name, (task, m, arrow, _) in zip(names, rows):
        out.append(line(name, arrow, [f"{r['metrics'][m]:.4f}" if m in r["metrics"] else "-" for r in report["runs"]]))
    arrow = "↓" if report.get("delta_m_sign") == "lower-better" else "↑"
    for key, title in (("delta_m", "Δm % (metrics)"), ("delta_m_per_task", "Δm % (per task)")):
        out.append(line(title, arrow, [f"{r[key]:+.2f}" if r[key] is not None else "n/a" for r in report["runs"]]))
    notes = [f"{r['label']}: no Δm, {r['delta_m_missing']}" for r in report["runs"] if "delta_m_missing" in r]
    dataset = report["dataset"]
    out.append("")
    style = f" ({report['metric_style']} style)" if report.get("metric_style", "libmtl") != "libmtl" else ""
    out.append(f"{report['at']} metrics{style}; tasks {','.join(report['tasks'])}; dataset {dataset[0]} ({dataset[1]}); "
               f"* = counts in Δm (LibMTL's metrics), baseline {report['baseline']}")
    out += notes
    return "\n".join(out)
