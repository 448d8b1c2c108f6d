"""Writes the summary of ``benchmarks/gpu_check.sh``: ``summary.md`` and ``results.json`` in OUT.

Reads the script's stage folder: ``steps.tsv`` (one line per step: name, status, exit code,
seconds, timeout, note), each step's JSON output (``<step>.json``; for ``train_step``, when that is
missing or cut off by the step's timeout, the rows it measured from ``train_step.jsonl``),
``env.txt`` and the JUnit XML of the test steps (``pytest_*.xml``). The step table, the test counts and failures and the
doctor's verdicts need only the standard library (the script calls this after every step, so a
killed run still leaves them); ``--tables`` adds the fastmtl reports (doctor, bench, models) as
text tables, importing fastmtl (the script's last call).

    python benchmarks/gpu_check_report.py STAGE OUT [--tables] [--dry-run 0|1] [--budget S] [--elapsed S]
"""
from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

STEP_FIELDS = ("step", "status", "rc", "seconds", "timeout", "note")
JSON_STEPS = ("doctor", "train_step", "kernel_table", "bench_ops", "gate")
ROWS_JSONL = {"train_step": "train_step.jsonl"}  # steps whose rows also come one JSON line each, as measured


def read_steps(stage: Path) -> List[Dict[str, str]]:
    path = stage / "steps.tsv"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        rows.append(dict(zip(STEP_FIELDS, parts + [""] * (len(STEP_FIELDS) - len(parts)))))
    return rows


def read_json(path: Path):
    """The parsed file, None when absent or empty, ``{"unparsable": ...}`` when not JSON."""
    if not path.exists() or not path.read_text().strip():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        return {"unparsable": f"{path.name}: {e}"}


def read_rows_jsonl(path: Path) -> Optional[Dict]:
    """A partial ``fastmtl bench --models`` report of the rows in ``path`` (one JSON object a line; a
    line cut off by a kill is dropped), None when there are none."""
    if not path.exists():
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not rows:
        return None
    return {"schema": "fastmtl-bench-models/1", "partial": f"{len(rows)} rows from {path.name}: the step's JSON is missing",
            "rows": rows}


def junit_summary(path: Path) -> Optional[Dict]:
    """Counts and the failing tests (name and first message line) of a JUnit XML file."""
    if not path.exists():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return {"unparsable": str(e)}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                message = (node.get("message") or node.text or "").strip().splitlines()
                failed.append({"test": f"{case.get('classname')}::{case.get('name')}", "kind": tag,
                               "message": message[0][:200] if message else ""})
    return {**counts, "failed": failed}


def doctor_lines(doctor: Optional[Dict]) -> List[str]:
    if not isinstance(doctor, dict) or "ops" not in doctor:
        return []
    ops = doctor["ops"]
    dev = doctor.get("device", {})
    lines = [f"device: {dev.get('name')} ({dev.get('sm_count', '-')} SMs, capability {dev.get('capability', '-')}); "
             "versions: " + ", ".join(f"{k} {v}" for k, v in doctor.get("versions", {}).items()),
             f"self-check on {ops.get('device')}: "
             + ("all ok" if ops.get("ok") else f"FALLBACK for {', '.join(ops.get('fallback_ops', []))}")]
    for c in ops.get("checks", []):
        if c["status"] != "ok":
            lines.append(f"- {c['op']} {c['dtype']} {c['layout']}: {c['status']}: {c['error']}")
    return lines


def fastmtl_tables(results: Dict) -> List[str]:
    """The fastmtl text reports of the JSON outputs (needs fastmtl importable)."""
    try:
        from fastmtl.perf.report import format_report
        from fastmtl.doctor import format_report as format_doctor
        from fastmtl.perf.kernel_table import format_kernel_table
        from fastmtl.perf.model_bench import format_model_report
    except Exception as e:  # the install step failed: the JSON is still in results.json
        return [f"(no tables: fastmtl does not import: {type(e).__name__}: {e})"]
    formatters = {"doctor": format_doctor, "train_step": format_model_report, "kernel_table": format_kernel_table,
                  "bench_ops": format_report}
    lines = []
    for name, fmt in formatters.items():
        data = results["steps"].get(name)
        if not isinstance(data, dict) or "unparsable" in data:
            continue
        try:
            text = fmt(data)
        except Exception as e:  # a partial report must not lose the others
            text = f"(cannot format {name}: {type(e).__name__}: {e})"
        partial = [f"({data['partial']})", ""] if data.get("partial") else []
        lines += [f"### {name}", ""] + partial + ["```", text, "```", ""]
    return lines


def build(stage: Path, out: Path, tables: bool, dry_run: bool, budget: int, elapsed: int) -> Dict:
    steps = read_steps(stage)
    results = {"schema": "fastmtl-gpu-check/1", "dry_run": dry_run, "budget_s": budget, "elapsed_s": elapsed,
               "step_table": steps, "steps": {}, "tests": {}}
    for name in JSON_STEPS:
        data = read_json(stage / f"{name}.json")
        if (data is None or "unparsable" in data) and name in ROWS_JSONL:
            data = read_rows_jsonl(stage / ROWS_JSONL[name]) or data
        if data is not None:
            results["steps"][name] = data
    for xml in sorted(stage.glob("pytest_*.xml")):
        results["tests"][xml.stem] = junit_summary(xml)

    env = (stage / "env.txt").read_text() if (stage / "env.txt").exists() else "(not recorded)"
    md = [f"# fastmtl GPU check{' (dry run)' if dry_run else ''}", "",
          f"{elapsed} s of the {budget} s budget; every step's output is in gpu_check.log, its JSON in results.json.", "",
          "| step | status | exit | seconds | timeout | note |", "|---|---|---|---|---|---|"]
    md += [f"| {s['step']} | {s['status']} | {s['rc']} | {s['seconds']} | {s['timeout']} | {s['note']} |" for s in steps]
    md += ["", "## Tests", ""]
    for name, t in results["tests"].items():
        if t is None or "unparsable" in t:
            md.append(f"- {name}: no readable JUnit XML")
            continue
        md.append(f"- {name}: {t['tests']} tests, {t['failures']} failures, {t['errors']} errors, {t['skipped']} skipped")
        md += [f"  - {f['kind']}: `{f['test']}`: {f['message']}" for f in t["failed"][:40]]
    doctor = doctor_lines(results["steps"].get("doctor"))
    if doctor:
        md += ["", "## Doctor", ""] + doctor
    md += ["", "## Environment", "", "```", env.rstrip(), "```", ""]
    if tables:
        md += ["## Reports", ""] + fastmtl_tables(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--tables", action="store_true", help="add fastmtl's text reports (imports fastmtl)")
    p.add_argument("--dry-run", type=int, default=0)
    p.add_argument("--budget", type=int, default=0)
    p.add_argument("--elapsed", type=int, default=0)
    a = p.parse_args(argv)
    build(a.stage, a.out, a.tables, bool(a.dry_run), a.budget, a.elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
