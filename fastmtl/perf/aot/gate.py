"""``fastmtl gate``: compile every Triton launch the fused ops make, for sm_80, sm_90 and sm_100.

The launches are captured from the real launchers at the ``full`` bench shapes on the fake CUDA
device of each target (its SM count decides some grids and splits), for every case of
:func:`.cases.all_cases` (forward and backward; bf16 and fp32; NCHW and channels_last; every
variant). Identical specialisations compile once (:func:`.compile.compile_all`, cached).

One row per (target, kernel, specialisation): compiled or the compiler's error, registers,
spills, shared memory, warps/stages, resident programs per SM and the occupancy they give
(:mod:`.archs`), the programs of its launches (smallest..largest) and the waves they make on the
target's SMs (``programs / (SMs * resident per SM)``; below 1 the GPU is not filled once), and the
share of global-load bytes in 128-bit (or wider) instructions of the SASS. The gate fails on any
compile error or spill.
"""
from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from fastmtl.perf.aot.archs import ARCHS, Arch, blocks_per_sm, occupancy, waves
from fastmtl.perf.aot.cases import DTYPES, all_cases, run_case
from fastmtl.perf.aot.compile import compile_all
from fastmtl.perf.aot.harness import Launch, triton_version


@dataclass
class Use:
    """One launch of a specialisation: which case and pass, and its programs."""

    case: str
    pass_: str
    programs: int
    grid: Tuple[int, int, int]


@dataclass
class Row:
    arch: Arch
    launch: Launch  # the first launch of this specialisation
    uses: List[Use] = field(default_factory=list)
    result: Dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.result.get("ok"))

    @property
    def spills(self) -> int:
        return int(self.result.get("spill_stores", 0)) + int(self.result.get("spill_loads", 0))

    def summary(self) -> Dict:
        r, a = self.result, self.arch
        progs = [u.programs for u in self.uses]
        out = {"arch": a.name, "kernel": self.launch.name, "config": self.launch.config(), "ok": self.ok,
               "dtypes": sorted({u.case.split()[-2] for u in self.uses}),
               "error": r.get("error"), "launches": len(self.uses), "programs_min": min(progs),
               "programs_max": max(progs), "sms": a.sms, "uses": [u.__dict__ for u in self.uses]}
        if not self.ok:
            return out
        smem = r["shared"] + r["static_shared"]
        resident = blocks_per_sm(a, r["reg"], r["num_warps"], smem)
        out.update(
            registers=r["reg"], spill_stores=r["spill_stores"], spill_loads=r["spill_loads"], local=r["local"],
            stack=r["stack"], shared=smem, num_warps=r["num_warps"], num_stages=r["num_stages"],
            resident_per_sm=resident, occupancy=occupancy(a, r["reg"], r["num_warps"], smem),
            waves_min=waves(a, min(progs), resident), programs_per_sm_min=min(progs) / a.sms,
            load_share_128=(r["load_bytes_128"] / r["load_bytes"]) if r["load_bytes"] else None,
            loads=r["loads"], stores=r["stores"], tma=r["tma"], mma=r["mma"], used_params=r["used_params"],
        )
        return out


def collect(archs: Sequence[int], ops: Optional[Sequence[str]] = None, dtypes: Sequence[str] = tuple(DTYPES),
            size: str = "full") -> List[Row]:
    """Every distinct (target, specialisation) the fused ops launch, with its uses (not compiled)."""
    rows: Dict[Tuple[int, str], Row] = {}
    for cc in archs:
        for case in all_cases(size, ops, dtypes):
            for pass_, timeline in run_case(case, "fused", cc).items():
                for launch in timeline.launches:
                    row = rows.setdefault((cc, launch.spec_key), Row(ARCHS[cc], launch))
                    row.uses.append(Use(case.name, pass_, launch.programs, launch.grid))
    return list(rows.values())


def run_gate(archs: Sequence[int] = tuple(ARCHS), ops: Optional[Sequence[str]] = None,
             dtypes: Sequence[str] = tuple(DTYPES), use_cache: bool = True, workers: int = 2,
             progress: bool = False) -> Dict:
    """Capture, compile (cached) and summarise; a JSON-able report with ``ok`` (no error, no spill)."""
    t0 = time.perf_counter()
    rows = collect(archs, ops, dtypes)
    captured = time.perf_counter() - t0
    results, cache = compile_all([(r.launch.spec(), r.arch.cc) for r in rows], workers=workers, use_cache=use_cache,
                                  progress=progress)
    for row, res in zip(rows, results):
        row.result = res
    summaries = [r.summary() for r in rows]
    summaries.sort(key=lambda s: (int(s["arch"][3:]), s["kernel"], s["config"]))
    return {
        "schema": "fastmtl-gate/1",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "triton": triton_version(),
        "archs": [ARCHS[cc].name for cc in archs],
        "dtypes": list(dtypes),
        "ok": all(r.ok and r.spills == 0 for r in rows),
        "errors": sum(not r.ok for r in rows),
        "spilling": sum(r.ok and r.spills > 0 for r in rows),
        "cache": cache,
        "seconds": {"capture": round(captured, 1), "total": round(time.perf_counter() - t0, 1)},
        "rows": summaries,
    }


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def format_gate(report: Dict, markdown: bool = False) -> str:
    """The gate's rows as a table (``markdown``: a GitHub table, for benchmarks/aot/results.md)."""
    head = ["arch", "kernel", "specialisation", "ok", "regs", "spill B", "smem KB", "warps/stages",
            "CTAs/SM", "occupancy", "programs", "waves", "128-bit loads", "MMA/TMA"]
    body = []
    for s in report["rows"]:
        if not s["ok"]:
            body.append([s["arch"], s["kernel"], s["config"], "ERROR: " + (s["error"] or "")[:200]] + [""] * 10)
            continue
        special = " ".join(f"{k}x{v}" for k, v in s["mma"].items()) + (f" TMAx{s['tma']}" if s["tma"] else "")
        progs = (f"{s['programs_min']}" if s["programs_min"] == s["programs_max"]
                 else f"{s['programs_min']}..{s['programs_max']}")
        body.append([s["arch"], s["kernel"], s["config"], "yes", str(s["registers"]),
                     str(s["spill_stores"] + s["spill_loads"]), f"{s['shared'] / 1024:.0f}",
                     f"{s['num_warps']}/{s['num_stages']}", str(s["resident_per_sm"]), _pct(s["occupancy"]),
                     progs, f"{s['waves_min']:.2f}", _pct(s["load_share_128"]), special or "-"])
    verdict = ("PASS: every specialisation compiles, none spills" if report["ok"] else
               f"FAIL: {report['errors']} compile errors, {report['spilling']} spilling specialisations")
    title = (f"fastmtl gate  {report['date']}  triton {report['triton']}  targets {', '.join(report['archs'])}  "
             f"dtypes {', '.join(report['dtypes'])}  ({report['cache']['compiled']} compiled, "
             f"{report['cache']['cached']} cached, {report['seconds']['total']} s)")
    notes = ("waves = smallest launch's programs / (SMs x CTAs per SM); 128-bit loads = share of the static "
             "global-load bytes (LDG/LDGSTS, per thread) in 128-bit or wider instructions")
    if markdown:
        return "\n".join([title, "", verdict, "", notes, "", _summary_table(report)])
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([title, verdict, notes, fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


def _span(values, fmt="{}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}..{fmt.format(hi)}"


def _summary_table(report: Dict) -> str:
    """One Markdown row per (target, kernel, activation dtype): ranges over its specialisations."""
    groups: Dict[Tuple[str, str, str], List[Dict]] = {}
    for s in report["rows"]:
        for dt in s["dtypes"]:
            groups.setdefault((s["arch"], s["kernel"], dt), []).append(s)
    head = ["arch", "kernel", "dtype", "specs", "compiled", "regs", "spill B", "smem KB", "warps/stages",
            "occupancy", "programs", "min waves", "128-bit loads", "MMA"]
    lines = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    for (arch, kernel, dt), rows in sorted(groups.items(), key=lambda kv: (int(kv[0][0][3:]),) + kv[0][1:]):
        ok = [r for r in rows if r["ok"]]
        cells = [arch, kernel, dt, str(len(rows)), f"{len(ok)}/{len(rows)}"]
        if ok:
            shares = [r["load_share_128"] for r in ok if r["load_share_128"] is not None]
            mma = sorted({k for r in ok for k in r["mma"]} | ({"TMA"} if any(r["tma"] for r in ok) else set()))
            cells += [_span([r["registers"] for r in ok]), str(max(r["spill_stores"] + r["spill_loads"] for r in ok)),
                      _span([round(r["shared"] / 1024) for r in ok]),
                      _span(sorted({f"{r['num_warps']}/{r['num_stages']}" for r in ok})),
                      _span([round(100 * r["occupancy"]) for r in ok], "{}%"),
                      _span([r["programs_min"] for r in ok] + [r["programs_max"] for r in ok]),
                      f"{min(r['waves_min'] for r in ok):.2f}",
                      _span([round(100 * x) for x in shares], "{}%") if shares else "-", " ".join(mma) or "-"]
        else:
            cells += ["ERROR"] + [""] * 8
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
