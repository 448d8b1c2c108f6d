"""The op benchmark's results: derived columns (GB/s, share of copy bandwidth, TFLOP/s, speed-ups)
of the timed rows (:func:`add_derived`) and the printed tables (:func:`format_report`)."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

from .cases import OP_DESCRIPTIONS
from .timing import gbps, tflops


def speedup(baseline_ms: Optional[float], ms: Optional[float]) -> Optional[float]:
    """``baseline / ms`` (how many times faster than the baseline); None when either is missing."""
    if baseline_ms is None or ms is None or ms <= 0:
        return None
    return baseline_ms / ms



def add_derived(rows: List[Dict], copy_gbps: Optional[float]) -> List[Dict]:
    """Fill each timed row's ``gbps``, ``copy_fraction``, ``tflops``, ``speedup_vs_eager`` and
    ``speedup_vs_compile`` (against the ``eager`` / ``compile`` rows of the same op, case and
    mode). Rows without ``ms`` (skipped) get None. Returns ``rows`` (changed in place)."""
    base: Dict[Tuple[str, str, str, str], float] = {}
    for r in rows:
        if r.get("ms") is not None:
            base[(r["op"], r["case"], r["mode"], r["impl"])] = r["ms"]
    for r in rows:
        ms = r.get("ms")
        key = (r["op"], r["case"], r["mode"])
        r["gbps"] = gbps(r["bytes"], ms) if ms is not None else None
        r["copy_fraction"] = r["gbps"] / copy_gbps if r["gbps"] is not None and copy_gbps else None
        r["tflops"] = tflops(r["flops"], ms) if ms is not None and r.get("flops") else None
        r["speedup_vs_eager"] = speedup(base.get(key + ("eager",)), ms)
        r["speedup_vs_compile"] = speedup(base.get(key + ("compile",)), ms)
    return rows



def format_value(value: Optional[float], spec: str, none: str = "-") -> str:
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)



def format_number(value: Optional[float]) -> str:
    """Three significant figures without exponents (GB/s, ms)."""
    if value is None or math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{max(1, 2 - math.floor(math.log10(value)))}f}" if value > 0 else "0"



def format_report(report: Dict) -> str:
    """Per op, a table of the timed rows; the implementations not timed are listed with the reason."""
    copy = report["copy"]
    lines = [
        f"fastmtl bench  {report['date']}  {report['device']}  torch {report['torch']}  triton {report['triton']}",
        f"size {report['size']}  dtype {report['dtype']}  FASTMTL_KERNELS={report['kernels_mode']}  "
        f"threads {report['threads']}  load average {report['load_average']}",
        f"timing: {report['timer']}",
        f"copy bandwidth: {copy['gbps']:.1f} GB/s  (dst.copy_(src), {copy['bytes'] / 2**20:.0f} MiB read+write, "
        f"{copy['ms']:.3f} ms)",
        "GB/s counts the fewest bytes each pass must move; % copy = GB/s / copy bandwidth; "
        "x eager / x compile = speed-up over the eager / torch.compile reference; "
        "rel err = max ||out - eager|| / ||eager|| over output and gradients",
    ]
    ops = list(dict.fromkeys(r["op"] for r in report["rows"]))
    for op in ops:
        rows = [r for r in report["rows"] if r["op"] == op]
        timed = [r for r in rows if r["ms"] is not None]
        with_flops = any(r.get("tflops") is not None for r in timed)
        lines += ["", f"== {op}: {OP_DESCRIPTIONS[op]}", f"   bytes: {report['byte_formulas'][op]}"]
        if timed:
            width = max(len(r["case"]) for r in timed)
            head = (f"{'case'.ljust(width)}  {'mode':8}  {'impl':13}  {'median ms':>10}  {'GB/s':>8}  {'% copy':>6}  "
                    f"{'x eager':>7}  {'x compile':>9}")
            head += f"  {'TFLOP/s':>7}" if with_flops else ""
            lines += [head + f"  {'rel err':>8}", "-" * (len(head) + 10)]
            for r in timed:
                line = (f"{r['case'].ljust(width)}  {r['mode']:8}  {r['impl']:13}  {format_number(r['ms']):>10}  {format_number(r['gbps']):>8}  "
                        f"{format_value(None if r['copy_fraction'] is None else 100 * r['copy_fraction'], '5.1f'):>5}%  "
                        f"{format_value(r['speedup_vs_eager'], '7.2f'):>7}  {format_value(r['speedup_vs_compile'], '9.2f'):>9}")
                line += f"  {format_value(r.get('tflops'), '7.2f'):>7}" if with_flops else ""
                flag = " !" if r.get("rel_err_ok") is False else ""
                lines.append(line + f"  {format_value(r['rel_err'], '8.1e'):>8}{flag}")
        skipped: Dict[str, List[str]] = {}
        for r in rows:
            if r["skipped"] is not None and r["impl"] not in skipped.get(r["skipped"], []):
                skipped.setdefault(r["skipped"], []).append(r["impl"])
        for reason, impls in skipped.items():
            lines.append(f"   not timed: {', '.join(impls)}: {reason}")
        for r in rows:
            if r.get("error"):
                lines.append(f"   FAILED: {r['case']} {r['mode']} {r['impl']}: {r['error']}")
        over = [r for r in timed if (r["copy_fraction"] or 0) > 1.0]
        if over:
            lines.append(f"   WARNING: {len(over)} rows above 100 % of the copy bandwidth: the copy was measured "
                         "slower than it can run (a loaded machine, or inputs that stay in cache); compare those "
                         "rows with each other only")
        if any(r.get("rel_err_ok") is False for r in rows):
            lines.append("   ! rel err above the rounding tolerance of the dtype: check the kernel before trusting its time")
    return "\n".join(lines)
