"""``fastmtl doctor``: what this machine runs, and whether every fused op passes its self-check.

Its output is a list of sections (:data:`SECTIONS`), each a function returning a JSON-able dict;
a section whose dict has ``"ok": False`` makes the command exit 1. Sections:

* ``device``: the CUDA device (name, SM count, compute capability, memory) or ``no CUDA``;
* ``versions``: python, torch, triton, fastmtl;
* ``kernels``: ``FASTMTL_KERNELS``, the Triton interpreter, ``FASTMTL_SELFCHECK``, whether
  triton imports;
* ``ops``: :func:`fastmtl.kernels.selfcheck.check` of every fused op in bf16 and fp32, NCHW and
  channels_last, on the CUDA device (or on the CPU through the interpreter when
  ``TRITON_INTERPRET=1``; else skipped): per check ``ok``, ``fallback`` (with the error) or
  ``skipped`` (with the reason). It runs whatever ``FASTMTL_SELFCHECK`` says;
* ``gate`` (only with ``gate=True``, ``fastmtl doctor --gate``): the compile gate's verdict
  (:func:`gate_section`) for this GPU's target (sm_90 off GPU). Off by default: on a cold cache it
  compiles every kernel specialisation, which takes minutes (:data:`GATE_COLD_NOTE`).

To add a section write a function returning a dict and append ``(name, function)`` to
:data:`SECTIONS`; the text output prints any section's scalar fields, :data:`FORMATTERS` may
give it a layout of its own.
"""
from __future__ import annotations

import datetime
import os
import platform
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import __version__
from .kernels import dispatch, selfcheck
from .perf.aot.archs import ARCHS
from .perf.aot.gate import run_gate

DTYPES = (torch.bfloat16, torch.float32)
GATE_COLD_NOTE = ("compiles every kernel specialisation for this GPU's target: on a cold cache about 5 to 20 "
                  "minutes on 2 CPU cores (progress on stderr), then cached (seconds)")


def device_section() -> Dict:
    """The CUDA device the ops would run on, or ``{"cuda": False}``."""
    if not torch.cuda.is_available():
        return {"cuda": False, "name": "no CUDA", "cpu": platform.processor() or platform.machine()}
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {"cuda": True, "index": index, "name": props.name, "sm_count": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}", "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda_runtime": torch.version.cuda, "devices": torch.cuda.device_count()}


def versions_section() -> Dict:
    try:
        import triton

        triton_version: Optional[str] = triton.__version__
    except Exception:  # triton missing or broken: reported, not fatal
        triton_version = None
    return {"python": platform.python_version(), "torch": torch.__version__, "triton": triton_version,
            "fastmtl": __version__}


def kernels_section() -> Dict:
    try:
        mode = dispatch.kernel_mode()
        mode_error = None
    except ValueError as e:  # an invalid FASTMTL_KERNELS is a finding, not a crash
        mode, mode_error = os.environ.get("FASTMTL_KERNELS"), str(e)
    section = {"FASTMTL_KERNELS": mode, "TRITON_INTERPRET": dispatch.interpreter_enabled(),
               "FASTMTL_SELFCHECK": selfcheck.enabled(), "triton_importable": dispatch.HAS_TRITON}
    if mode_error:
        section.update(ok=False, error=mode_error)
    return section


def check_device() -> Tuple[Optional[torch.device], Optional[str]]:
    """``(device, None)`` where the self-checks can run, else ``(None, why not)``."""
    if not dispatch.HAS_TRITON:
        return None, "triton is not importable"
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device()), None
    if dispatch.interpreter_enabled():
        return torch.device("cpu"), None
    return None, "no CUDA (set TRITON_INTERPRET=1 to check the kernels on the CPU through the interpreter)"


def ops_section() -> Dict:
    """The self-check of every fused op, dtype and layout (see the module docstring)."""
    device, reason = check_device()
    rows: List[Dict] = []
    for op in selfcheck.OPS:
        for dtype in DTYPES:
            for layout in selfcheck.LAYOUTS:
                if device is None:
                    rows.append({"op": op, "dtype": str(dtype).replace("torch.", ""), "layout": layout,
                                 "status": "skipped", "error": reason, "seconds": 0.0})
                    continue
                r = selfcheck.check(op, device, dtype, layout == "channels_last", warn=False)
                rows.append({"op": op, "dtype": r.dtype, "layout": r.layout,
                             "status": "ok" if r.ok else "fallback", "error": r.error, "seconds": r.seconds})
    fallbacks = sorted({r["op"] for r in rows if r["status"] == "fallback"})
    return {"device": str(device) if device is not None else None,
            "interpreted": device is not None and device.type == "cpu",
            "ok": not fallbacks, "fallback_ops": fallbacks, "checks": rows}


def gate_section(progress: bool = False) -> Dict:
    """The compile gate (:mod:`fastmtl.perf.aot.gate`) for this GPU's target (sm_90 without a GPU, or
    for a GPU the gate has no target for): every specialisation the fused ops launch at the
    bench's ``full`` shapes compiles, without spills. Results are cached (``$FASTMTL_CACHE/aot``)."""
    if not dispatch.HAS_TRITON:
        return {"ok": None, "error": "triton is not importable"}
    cc = 90
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        cc = major * 10 + minor if major * 10 + minor in ARCHS else cc
    try:
        report = run_gate(archs=(cc,), workers=max(1, min(8, os.cpu_count() or 1)), progress=progress)
    except Exception as e:  # a launcher that fails while its launches are captured is a finding
        return {"ok": False, "arch": ARCHS[cc].name, "error": f"{type(e).__name__}: {e}"}
    return {"ok": report["ok"], "arch": ARCHS[cc].name, "specialisations": len(report["rows"]),
            "errors": report["errors"], "spilling": report["spilling"], "cache": report["cache"],
            "seconds": report["seconds"]["total"]}


SECTIONS: List[Tuple[str, Callable[[], Dict]]] = [
    ("device", device_section),
    ("versions", versions_section),
    ("kernels", kernels_section),
    ("ops", ops_section),
    ("gate", gate_section),
]


def collect(gate: bool = False, progress: bool = False) -> Dict:
    """The whole report: ``{"schema", "date", "ok", <section name>: <section dict>, ...}``; the ``gate``
    section runs only with ``gate`` (``progress``: the compiler's progress bar on stderr)."""
    report: Dict = {"schema": "fastmtl-doctor/1",
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for name, section in SECTIONS:
        if name == "gate":
            report[name] = section(progress) if gate else {"ok": None, "skipped": f"run fastmtl doctor --gate: it "
                                                                                 f"{GATE_COLD_NOTE}"}
            continue
        report[name] = section()
    report["ok"] = all(report[name].get("ok", True) is not False for name, _ in SECTIONS)
    return report


def _format_fields(name: str, section: Dict) -> List[str]:
    fields = "  ".join(f"{k}={v}" for k, v in section.items() if not isinstance(v, (dict, list)))
    return [f"{name:9s} {fields}"]


def _format_device(name: str, d: Dict) -> List[str]:
    if not d["cuda"]:
        return [f"{name:9s} no CUDA (cpu {d['cpu']})"]
    return [f"{name:9s} {d['name']}  {d['sm_count']} SMs  sm_{d['capability'].replace('.', '')}  "
            f"{d['memory_gib']} GiB  CUDA {d['cuda_runtime']}  (cuda:{d['index']} of {d['devices']})"]


def _format_ops(name: str, s: Dict) -> List[str]:
    if s["device"] is None:
        return [f"{name:9s} self-check skipped: {s['checks'][0]['error']}"]
    where = f"{s['device']} ({'Triton interpreter' if s['interpreted'] else 'compiled kernels'})"
    lines = [f"{name:9s} self-check on {where}", f"  {'op':14s}{'dtype':10s}{'layout':15s}{'verdict':10s}{'s':>7s}  error"]
    for r in s["checks"]:
        lines.append(f"  {r['op']:14s}{r['dtype']:10s}{r['layout']:15s}{r['status']:10s}{r['seconds']:7.2f}  "
                     f"{r['error'] or ''}")
    return lines


FORMATTERS: Dict[str, Callable[[str, Dict], List[str]]] = {"device": _format_device, "ops": _format_ops}


def format_report(report: Dict) -> str:
    lines = [f"fastmtl doctor  {report['date']}"]
    for name, _ in SECTIONS:
        lines += FORMATTERS.get(name, _format_fields)(name, report[name])
    failed = [name for name, _ in SECTIONS if report[name].get("ok", True) is False]
    ops = report.get("ops", {})
    if ops.get("fallback_ops"):
        lines.append(f"FALLBACK: {', '.join(ops['fallback_ops'])} failed a self-check and would run the PyTorch "
                     "reference for those keys")
    lines.append("verdict: " + ("ok" if report["ok"] else f"NOT OK ({', '.join(failed)})"))
    return "\n".join(lines)
