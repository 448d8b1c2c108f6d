"""The step MODEL: modelled time, launches and bytes of THE train step (traced by
:mod:`fastmtl.perf.step_model_trace`) per scenario, on a named GPU's roofline. A model, not a
measurement: time of a kernel = max(FLOPs / peak, bytes / bandwidth) + launch cost.

Scenarios: ``eager`` (every aten op one kernel), ``compile`` (Inductor-like: each run of
consecutive non-conv ops of the forward, loss or backward is one kernel that reads its outside inputs and writes only
what is read later), ``fused`` / ``fused_compile`` (the same with fastmtl's fused ops in the model),
``fused_compile_graphs`` (the latter replayed as one CUDA graph: one launch per step)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Tuple

from fastmtl.perf.step_model_trace import OpRecord, StepTrace, trace_step


@dataclass(frozen=True)
class Gpu:
    """Roofline numbers of a GPU: usable dense bf16 FLOP/s, DRAM bytes/s, seconds per launch."""

    name: str
    flops: float
    bandwidth: float
    launch_s: float


GPUS = {"h200": Gpu("H200", 790e12, 4.3e12, 4e-6), "h100": Gpu("H100 SXM", 790e12, 3.35e12, 4e-6)}
SCENARIOS = ("eager", "compile", "fused", "fused_compile", "fused_compile_graphs")
UNFUSABLE = {"convolution", "convolution_backward", "mm", "addmm", "bmm"}
"""Ops a compiler leaves as library calls (cuDNN / cuBLAS); fused ops are barriers too, and the
optimizer phase stays eager (``--compile`` compiles the model and the loss, not the optimizer)."""


CONV_GROUPS = ("backbone convs", "ASPP", "decoder convs", "attention")
"""The groups whose FLOP-carrying kernels are the convolutions ("bytes outside the convolutions": the rest)."""


@dataclass
class Kernel:
    """One modelled kernel: a traced op, or (compile) a run of them fused."""

    group: str
    flops: int
    bytes: int
    launches: int


def _eager(ops: List[OpRecord]) -> List[Kernel]:
    return [Kernel(o.group, o.flops, o.bytes, o.launches) for o in ops]


def _compiled(ops: List[OpRecord]) -> List[Kernel]:
    """Runs of consecutive fusable ops of one phase (forward, loss, backward) become one kernel;
    its bytes: the storages it reads that it did not write, and those it writes that a later op
    outside it reads (or nobody: a result such as a gradient or a parameter)."""
    last_read: Dict[int, int] = {}
    for i, o in enumerate(ops):
        for s in o.reads:
            last_read[s] = i
    kernels: List[Kernel] = []
    run: List[Tuple[int, OpRecord]] = []

    def close():
        if not run:
            return
        end = run[-1][0]
        written = {s for _, o in run for s in o.writes}
        sizes = _sizes(run)
        read_bytes = sum(sizes[s] for s in {s for _, o in run for s in o.reads} - written)
        write_bytes = sum(sizes[s] for s in written if last_read.get(s, end + 1) > end or s not in last_read)
        main = max(run, key=lambda io: io[1].bytes)[1].group
        kernels.append(Kernel(main, sum(o.flops for _, o in run), read_bytes + write_bytes, 1))
        run.clear()

    for i, o in enumerate(ops):
        barrier = o.name in UNFUSABLE or o.name.startswith("fastmtl::") or o.phase == "optimizer"
        if barrier or (run and run[-1][1].phase != o.phase):
            close()
        if barrier:
            kernels.append(Kernel(o.group, o.flops, o.bytes, o.launches))
        else:
            run.append((i, o))
    close()
    return kernels


def _sizes(run: List[Tuple[int, OpRecord]]) -> Dict[int, int]:
    """Bytes of each storage a run touches (its largest access)."""
    sizes: Dict[int, int] = defaultdict(int)
    for _, o in run:
        for s, n in zip(o.reads + o.writes, o.read_bytes + o.write_bytes):
            sizes[s] = max(sizes[s], n)
    return sizes


def _kernel_s(k: Kernel, gpu: Gpu, launch_cost: bool = True) -> float:
    """Seconds of one kernel: max(FLOPs / peak, bytes / bandwidth), plus its launches' cost."""
    return max(k.flops / gpu.flops, k.bytes / gpu.bandwidth) + (k.launches * gpu.launch_s if launch_cost else 0)


def _groups(kernels: List[Kernel], gpu: Gpu) -> List[dict]:
    out: Dict[str, dict] = {}
    for k in kernels:
        g = out.setdefault(k.group, {"group": k.group, "flops": 0, "bytes": 0, "launches": 0, "ms": 0.0})
        g["flops"] += k.flops
        g["bytes"] += k.bytes
        g["launches"] += k.launches
        g["ms"] += _kernel_s(k, gpu) * 1e3
    return sorted(out.values(), key=lambda g: -g["ms"])


def _scenario(kernels: List[Kernel], gpu: Gpu, graphs: bool = False) -> dict:
    """A scenario's totals; ``graphs``: one CUDA-graph replay (one launch) instead of each kernel's."""
    launches = sum(k.launches for k in kernels)
    ms = (sum(_kernel_s(k, gpu, launch_cost=not graphs) for k in kernels) + (gpu.launch_s if graphs else 0)) * 1e3
    total = sum(k.bytes for k in kernels)
    conv_bytes = sum(k.bytes for k in kernels if k.group in CONV_GROUPS and k.flops)
    return {"ms": round(ms, 3), "launches": launches, "host_launches": 1 if graphs else launches,
            "bytes": total, "bytes_outside_convs": total - conv_bytes, "flops": sum(k.flops for k in kernels)}


def step_model(model: str = "default", gpu: str = "h200", batch: int = 8, size: Tuple[int, int] = (256, 512),
               channels_last: bool = True) -> dict:
    """The step MODEL report (JSON-able): scenarios, host syncs, groups (eager, unfused), settings."""
    g = GPUS[gpu]
    plain = trace_step(model, batch, size, channels_last, fused=False)
    fused = trace_step(model, batch, size, channels_last, fused=True)
    fused_compiled = trace_step(model, batch, size, channels_last, fused=True, compiling=True)  # the paths compile takes
    kernels = {"eager": _eager(plain.ops), "compile": _compiled(plain.ops), "fused": _eager(fused.ops),
               "fused_compile": _compiled(fused_compiled.ops)}
    scenarios = {name: _scenario(k, g) for name, k in kernels.items()}
    scenarios["fused_compile_graphs"] = _scenario(kernels["fused_compile"], g, graphs=True)
    return {"kind": "MODEL (roofline, not measured)", "model": model, "gpu": g.name, "batch": batch,
            "size": list(size), "layout": "channels_last" if channels_last else "nchw", "amp": "bf16",
            "peak_flops": g.flops, "bandwidth": g.bandwidth, "launch_us": g.launch_s * 1e6,
            "scenarios": scenarios, "host_syncs": plain.host_syncs, "host_sync_ops": plain.sync_ops,
            "host_syncs_fused": fused.host_syncs,
            "groups": _groups(kernels["eager"], g), "groups_fused": _groups(kernels["fused"], g)}


def format_step_model(report: dict) -> str:
    """The report as a text table, labelled MODEL."""
    r = report
    lines = [f"STEP MODEL (roofline, not measured): {r['model']} train step, {r['gpu']}, {r['amp']}, batch {r['batch']} "
             f"at {r['size'][0]}x{r['size'][1]}, {r['layout']}; host syncs per step: {r['host_syncs']}",
             f"{'scenario':<22} {'MODEL ms':>9} {'launches':>9} {'host launches':>13} {'GB':>7} {'GB outside convs':>16}"]
    for name, s in r["scenarios"].items():
        lines.append(f"{name:<22} {s['ms']:>9.2f} {s['launches']:>9} {s['host_launches']:>13} {s['bytes'] / 1e9:>7.2f} "
                     f"{s['bytes_outside_convs'] / 1e9:>16.2f}")
    lines.append(f"\n{'group (eager, MODEL)':<30} {'ms':>8} {'launches':>9} {'GB':>7} {'TFLOP':>7}")
    for g in r["groups"]:
        lines.append(f"{g['group']:<30} {g['ms']:>8.2f} {g['launches']:>9} {g['bytes'] / 1e9:>7.2f} {g['flops'] / 1e12:>7.2f}")
    return "\n".join(lines)
