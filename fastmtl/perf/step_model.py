"""The step MODEL: modelled time, launches and bytes of THE train step (traced by
:mod:`fastmtl.perf.step_model_trace`) per scenario, on a named GPU's roofline. A model, not a
measurement: time of a kernel = max(FLOPs / peak, bytes / bandwidth) + launch cost.

Scenarios: ``eager`` (every aten op one kernel), ``compile`` (Inductor-like: each run of
consecutive non-conv ops of the forward, loss or backward is one kernel that reads its outside inputs and writes only
what is read later), ``compile_graphs`` (that replayed as one CUDA graph: one launch per step; the
strongest baseline of the unfused model, torch.compile's reduce-overhead mode), ``fused`` /
``fused_compile`` (the same with fastmtl's fused ops in the model; the compiled one traced with the
paths ``torch.compile`` takes, e.g. :class:`fastmtl.nn.FusedBatchNormReLU`'s ``F.batch_norm`` +
``relu``), ``fused_compile_graphs``.

Bounds: ``conv_floor_ms`` is the convolution and matmul kernels alone (roofline, no launch cost):
the step's time if every other op were free, so ``eager / conv_floor`` is the most any fusion of
the ops outside the convolutions can gain. ``forward_free_ms`` is ``fused_compile_graphs`` with
every forward kernel outside the convolutions free: the most that convolutions absorbing the
forward's BatchNorm, ReLU, gates and upsampling in their prologues and epilogues (custom
convolution kernels at the same roofline) could give, the backward and the optimizer as
``fused_compile`` runs them (each fused run already reads its inputs once and writes its outputs
once: BatchNorm's backward reads the gradient and the input and writes one gradient)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple

from fastmtl.perf.step_model_trace import OpRecord, StepTrace, trace_step


@dataclass(frozen=True)
class Gpu:
    """Roofline numbers of a GPU: usable dense bf16 FLOP/s, DRAM bytes/s, seconds per launch."""

    name: str
    flops: float
    bandwidth: float
    launch_s: float


GPUS = {"h200": Gpu("H200", 790e12, 4.3e12, 4e-6), "h100": Gpu("H100 SXM", 790e12, 3.35e12, 4e-6)}
SCENARIOS = ("eager", "compile", "compile_graphs", "fused", "fused_compile", "fused_compile_graphs")
UNFUSABLE = {"convolution", "convolution_backward", "mm", "addmm", "bmm"}
"""Ops a compiler leaves as library calls (cuDNN / cuBLAS); fused ops are barriers too, and the
optimizer phase stays eager (``--compile`` compiles the model and the loss, not the optimizer)."""


CONV_GROUPS = ("backbone convs", "ASPP", "decoder convs", "attention")
"""The groups whose FLOP-carrying kernels are the convolutions ("bytes outside the convolutions": the rest)."""


@dataclass
class Kernel:
    """One modelled kernel: a traced op, or (compile) a run of them fused; ``last_op``: the index of
    its last op in the trace (a scenario's kernels cover the ops in order)."""

    group: str
    flops: int
    bytes: int
    launches: int
    last_op: int = -1


class Scenario(NamedTuple):
    """A scenario's trace, its kernels, and whether the step replays as one CUDA graph."""

    trace: StepTrace
    kernels: List[Kernel]
    graphs: bool


LAYOUT_GROUP = "layout transposes"
"""The group of the NCHW <-> NHWC copies around half-precision convolutions (:mod:`step_model_trace`)."""


def _library_call(o: OpRecord, i: int) -> List[Kernel]:
    """Op ``i`` run as it is (a library call, a fused op, or any op in eager), and its layout transposes."""
    kernels = [Kernel(o.group, o.flops, o.bytes, o.launches, i)]
    if o.transposes:
        kernels.append(Kernel(LAYOUT_GROUP, 0, o.transpose_bytes, o.transposes, i))
    return kernels


def _eager(ops: List[OpRecord]) -> List[Kernel]:
    return [k for i, o in enumerate(ops) for k in _library_call(o, i)]


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
        kernels.append(Kernel(main, sum(o.flops for _, o in run), read_bytes + write_bytes, 1, end))
        run.clear()

    for i, o in enumerate(ops):
        barrier = o.name in UNFUSABLE or o.name.startswith("fastmtl::") or o.phase == "optimizer"
        if barrier or (run and run[-1][1].phase != o.phase):
            close()
        if barrier:
            kernels += _library_call(o, i)
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


def _is_conv(k: Kernel) -> bool:
    """A convolution or matmul kernel (the FLOP-carrying kernels of the conv groups)."""
    return k.group in CONV_GROUPS and k.flops > 0


def _forward_free(run: Scenario, gpu: Gpu) -> Tuple[float, int]:
    """``(ms, bytes outside the convolutions)`` of ``run`` (a graphs scenario: no launch costs but
    one) with its forward kernels outside the convolutions free."""
    kept = [k for k in run.kernels if _is_conv(k) or run.trace.ops[k.last_op].phase != "forward"]
    ms = (sum(_kernel_s(k, gpu, launch_cost=False) for k in kept) + gpu.launch_s) * 1e3
    return ms, sum(k.bytes for k in kept if not _is_conv(k))


def _scenario(kernels: List[Kernel], gpu: Gpu, graphs: bool = False) -> dict:
    """A scenario's totals; ``graphs``: one CUDA-graph replay (one launch) instead of each kernel's."""
    launches = sum(k.launches for k in kernels)
    ms = (sum(_kernel_s(k, gpu, launch_cost=not graphs) for k in kernels) + (gpu.launch_s if graphs else 0)) * 1e3
    total = sum(k.bytes for k in kernels)
    conv_bytes = sum(k.bytes for k in kernels if _is_conv(k))
    return {"ms": round(ms, 3), "launches": launches, "host_launches": 1 if graphs else launches,
            "bytes": total, "bytes_outside_convs": total - conv_bytes, "flops": sum(k.flops for k in kernels)}


def scenario_runs(plain: StepTrace, fused: StepTrace, fused_compiled: Optional[StepTrace] = None) -> Dict[str, Scenario]:
    """Every scenario of the step traced without (``plain``) and with fastmtl's fused ops (``fused``
    eager; ``fused_compiled``: traced with ``compiling=True``, the paths ``torch.compile`` takes, by
    default ``fused``)."""
    fc = fused if fused_compiled is None else fused_compiled
    compiled, fused_kernels = _compiled(plain.ops), _compiled(fc.ops)
    runs = {"eager": Scenario(plain, _eager(plain.ops), False), "compile": Scenario(plain, compiled, False),
            "compile_graphs": Scenario(plain, compiled, True),
            "fused": Scenario(fused, _eager(fused.ops), False), "fused_compile": Scenario(fc, fused_kernels, False),
            "fused_compile_graphs": Scenario(fc, fused_kernels, True)}
    return {name: runs[name] for name in SCENARIOS}


def step_model(model: str = "default", gpu: str = "h200", batch: int = 8, size: Tuple[int, int] = (256, 512),
               channels_last: bool = True) -> dict:
    """The step MODEL report (JSON-able): scenarios, host syncs, groups (eager, unfused), settings."""
    g = GPUS[gpu]
    plain = trace_step(model, batch, size, channels_last, fused=False)
    fused = trace_step(model, batch, size, channels_last, fused=True)
    fused_compiled = trace_step(model, batch, size, channels_last, fused=True, compiling=True)  # the paths compile takes
    runs = scenario_runs(plain, fused, fused_compiled)
    scenarios = {name: _scenario(r.kernels, g, r.graphs) for name, r in runs.items()}
    for s in scenarios.values():
        s["x_eager"] = round(scenarios["eager"]["ms"] / s["ms"], 3)
        s["x_compile"] = round(scenarios["compile"]["ms"] / s["ms"], 3)
    floor = sum(_kernel_s(k, g, launch_cost=False) for k in runs["eager"].kernels if _is_conv(k)) * 1e3
    free, free_bytes = _forward_free(runs["fused_compile_graphs"], g)
    eager_ms, compile_ms = scenarios["eager"]["ms"], scenarios["compile"]["ms"]
    bounds = {"conv_floor_ms": round(floor, 3), "max_x_eager": round(eager_ms / floor, 3),
              "max_x_compile": round(compile_ms / floor, 3),
              "forward_free_ms": round(free, 3), "forward_free_x_eager": round(eager_ms / free, 3),
              "forward_free_x_compile": round(compile_ms / free, 3), "forward_free_bytes_outside_convs": free_bytes}
    return {"kind": "MODEL (roofline, not measured)", "model": model, "gpu": g.name, "batch": batch,
            "size": list(size), "layout": "channels_last" if channels_last else "nchw", "amp": "bf16",
            "peak_flops": g.flops, "bandwidth": g.bandwidth, "launch_us": g.launch_s * 1e6,
            "scenarios": scenarios, "bounds": bounds, "host_syncs": plain.host_syncs, "host_sync_ops": plain.sync_ops,
            "host_syncs_fused": fused.host_syncs,
            "groups": _groups(runs["eager"].kernels, g), "groups_fused": _groups(runs["fused"].kernels, g)}


def format_step_model(report: dict) -> str:
    """The report as a text table, labelled MODEL."""
    r = report
    lines = [f"STEP MODEL (roofline, not measured): {r['model']} train step, {r['gpu']}, {r['amp']}, batch {r['batch']} "
             f"at {r['size'][0]}x{r['size'][1]}, {r['layout']}; host syncs per step: {r['host_syncs']}",
             f"{'scenario':<22} {'MODEL ms':>9} {'x eager':>8} {'x compile':>9} {'launches':>9} {'host launches':>13} "
             f"{'GB':>7} {'GB outside convs':>16}"]
    for name, s in r["scenarios"].items():
        lines.append(f"{name:<22} {s['ms']:>9.2f} {s['x_eager']:>8.2f} {s['x_compile']:>9.2f} {s['launches']:>9} "
                     f"{s['host_launches']:>13} {s['bytes'] / 1e9:>7.2f} {s['bytes_outside_convs'] / 1e9:>16.2f}")
    b = r["bounds"]
    lines.append(f"bound: the convolutions alone take {b['conv_floor_ms']:.2f} ms (MODEL), so fusing everything else "
                 f"can give at most {b['max_x_eager']:.2f}x eager, {b['max_x_compile']:.2f}x compile")
    lines.append(f"bound: fused_compile_graphs with every forward op outside the convolutions free (absorbed by "
                 f"custom convolutions) takes {b['forward_free_ms']:.2f} ms (MODEL): {b['forward_free_x_eager']:.2f}x "
                 f"eager, {b['forward_free_x_compile']:.2f}x compile, {b['forward_free_bytes_outside_convs'] / 1e9:.2f} GB "
                 f"outside the convolutions")
    lines.append(f"\n{'group (eager, MODEL)':<30} {'ms':>8} {'launches':>9} {'GB':>7} {'TFLOP':>7}")
    for g in r["groups"]:
        lines.append(f"{g['group']:<30} {g['ms']:>8.2f} {g['launches']:>9} {g['bytes'] / 1e9:>7.2f} {g['flops'] / 1e12:>7.2f}")
    return "\n".join(lines)
