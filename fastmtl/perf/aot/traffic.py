"""``fastmtl traffic``: a memory-traffic MODEL of each op and pass (a model, not a measurement).

For a case of :mod:`.cases` and a pass (``forward``, ``backward``, ``full`` = both), on the fake
CUDA device of sm_90 (H100/H200, 132 SMs):

* ``min_bytes``: the fewest bytes the pass must move, by ``fastmtl.perf.cases``'s formulas;
* ``fused_bytes`` / ``launches``: what the fused path as launched moves, summed over its events:
  a **Triton launch** moves each distinct tensor argument it uses once (distinct: buffer, offset,
  shape, strides; used: referenced in the kernel's TTIR, so placeholder pointers of a disabled
  branch count nothing; its bytes: ``numel * itemsize``) -- i.e. perfect reuse within a launch, none
  across launches; a **torch op** between the kernels moves its inputs and outputs (an argument it
  only writes, like ``copy_``'s destination, counts once); views, allocations and metadata queries
  are free and are not launches;
* ``eager_bytes`` / ``eager_launches``: the same count over the aten ops of the plain-PyTorch
  reference (forward, and ``torch.autograd.grad`` for the backward), one launch per aten op (a
  cuDNN convolution may launch more than one kernel);
* ``time_us`` and ``eager_time_us``: ``bytes / BANDWIDTH + launches * LAUNCH_US`` -- the H200's
  measured copy bandwidth (read + write) and an assumed per-launch cost; ``floor_us``:
  ``min_bytes / BANDWIDTH``.

Python API for tests and targets: :func:`model` (one case), :func:`models` (every case).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import torch

from fastmtl.perf import cases as op_cases

from fastmtl.perf.aot.cases import DTYPES, VARIANTS, AotCase, all_cases, run_case
from fastmtl.perf.aot.compile import compile_all
from fastmtl.perf.aot.harness import Launch, Timeline, TorchOp, triton_version

BANDWIDTH = 4.3e12
"""Bytes per second, read + write: the H200's measured device-to-device copy bandwidth."""
LAUNCH_US = 3.0
"""Assumed cost of one kernel launch in microseconds (host launch overhead on H100/H200 is a few us)."""
ARCH = 90
PASSES = ("forward", "backward", "full")


@dataclass
class KernelTraffic:
    """One launch of the fused path: a Triton kernel or a torch op, its bytes and programs."""

    name: str
    kind: str  # "triton" or "torch"
    bytes: int
    programs: Optional[int] = None


@dataclass
class PassModel:
    """The model of one (op, case, variant, dtype, layout, pass)."""

    op: str
    case: str
    variant: str
    dtype: str
    layout: str
    pass_: str
    min_bytes: int
    fused_bytes: int
    eager_bytes: int
    launches: int
    eager_launches: int
    kernels: List[KernelTraffic] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """fused bytes / minimum bytes."""
        return self.fused_bytes / self.min_bytes

    @property
    def eager_ratio(self) -> float:
        return self.eager_bytes / self.min_bytes

    @property
    def floor_us(self) -> float:
        return self.min_bytes / BANDWIDTH * 1e6

    @property
    def time_us(self) -> float:
        return self.fused_bytes / BANDWIDTH * 1e6 + self.launches * LAUNCH_US

    @property
    def eager_time_us(self) -> float:
        return self.eager_bytes / BANDWIDTH * 1e6 + self.eager_launches * LAUNCH_US

    @property
    def triton_launches(self) -> int:
        return sum(k.kind == "triton" for k in self.kernels)

    def as_dict(self) -> Dict:
        d = {k: v for k, v in self.__dict__.items() if k != "kernels"}
        d.update(pass_=self.pass_, ratio=self.ratio, eager_ratio=self.eager_ratio, floor_us=self.floor_us,
                 time_us=self.time_us, eager_time_us=self.eager_time_us,
                 kernels=[k.__dict__ for k in self.kernels])
        return d


# --------------------------------------------------------------------------- counting rules
def op_bytes(op: TorchOp) -> int:
    """A torch op's bytes: inputs it reads plus outputs it writes."""
    read = sum(t.nbytes for i, t in enumerate(op.inputs) if i not in op.written_only)
    return read + sum(t.nbytes for t in op.outputs)


def launch_bytes(launch: Launch, used: Sequence[str]) -> int:
    """A Triton launch's bytes: each distinct tensor argument among the ``used`` parameters, once."""
    distinct = {t.extent: t.nbytes for name, t in launch.tensors.items() if name in used}
    return sum(distinct.values())


def _used_params(launches: List[Launch]) -> List[List[str]]:
    results, _ = compile_all([(l.spec(), ARCH) for l in launches])
    out = []
    for launch, res in zip(launches, results):
        if not res.get("ok"):
            raise RuntimeError(f"fastmtl traffic: {launch.name} does not compile for sm_{ARCH}: {res.get('error')}")
        out.append(res["used_params"])
    return out


def fused_kernels(timeline: Timeline) -> List[KernelTraffic]:
    """The launches of a fused-path timeline with their bytes (Triton kernels and torch glue)."""
    launches = timeline.launches
    used = dict(zip(map(id, launches), _used_params(launches)))
    out = []
    for e in timeline.events:
        if isinstance(e, Launch):
            out.append(KernelTraffic(e.name, "triton", launch_bytes(e, used[id(e)]), e.programs))
        elif e.kind == "compute":
            out.append(KernelTraffic(e.name, "torch", op_bytes(e)))
    return out


def min_bytes(case: AotCase) -> Dict[str, int]:
    """The bench's fewest bytes (:func:`fastmtl.perf.cases.bytes_moved`) for the bench's arguments; for
    the other variants the same formulas: without the residual (se_scale, sigmoid_gate ``plain``),
    without scale, shift and the ReLU mask (aspp ``train``), without running statistics
    (bn_relu ``no_running``); aspp ``eval_bn_grad`` and silog
    ``metres`` move the bench's bytes (plus two ``(Cout,)`` gradients, not counted)."""
    dtype = DTYPES[case.dtype]
    d, s = dict(case.shape.dims), dtype.itemsize
    if case.variant == VARIANTS[case.op][0] or case.variant.name in ("eval_bn_grad", "metres"):
        return op_cases.bytes_moved(case.shape, dtype)
    if case.op == "se_scale":
        return op_cases.se_scale_bytes(d["n"], d["c"], d["h"], d["w"], max(1, d["c"] // 16), s, 4, residual=False)
    if case.op == "sigmoid_gate":
        return op_cases.sigmoid_gate_bytes(d["n"], d["c"], d["h"], d["w"], s, residual=False)
    if case.op == "bn_relu":
        return op_cases.bn_relu_bytes(d["n"], d["c"], d["h"], d["w"], s, 4, running=False)
    if case.variant.name == "train":
        b = op_cases.aspp_bytes(d["n"], d["k"], d["cb"], d["cout"], d["h"], d["w"], s, s, 0)
        b["backward"] -= d["n"] * d["cout"] * d["h"] * d["w"] * s  # no ReLU mask to read
        b["full"] = b["forward"] + b["backward"]
        return b
    raise ValueError(f"no byte formula for {case.name}")


def case_models(case: AotCase) -> Dict[str, PassModel]:
    """``{pass: PassModel}`` for the three passes of one case."""
    fused, eager = run_case(case, "fused", ARCH), run_case(case, "eager", ARCH)
    mins = min_bytes(case)
    out = {}
    for p in ("forward", "backward"):
        kernels = fused_kernels(fused[p])
        eager_ops = eager[p].torch_ops
        out[p] = PassModel(case.op, case.shape.name, case.variant.name, case.dtype, case.layout, p, mins[p],
                           sum(k.bytes for k in kernels), sum(op_bytes(o) for o in eager_ops), len(kernels),
                           len(eager_ops), kernels)
    f, b = out["forward"], out["backward"]
    out["full"] = PassModel(case.op, case.shape.name, case.variant.name, case.dtype, case.layout, "full", mins["full"],
                            f.fused_bytes + b.fused_bytes, f.eager_bytes + b.eager_bytes, f.launches + b.launches,
                            f.eager_launches + b.eager_launches, f.kernels + b.kernels)
    return out


def _dtype_name(dtype: Union[str, torch.dtype]) -> str:
    if isinstance(dtype, torch.dtype):
        names = {v: k for k, v in DTYPES.items()}
        if dtype not in names:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype}")
        return names[dtype]
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return dtype


def models(op: Optional[str] = None, dtype: Union[str, torch.dtype, None] = None, layout: Optional[str] = "nchw",
           variants: bool = False, size: str = "full") -> List[PassModel]:
    """Every pass of every case (filtered by ``op``, ``dtype``, ``layout``; ``variants``: all
    variants, else the bench's arguments only)."""
    dtypes = [_dtype_name(dtype)] if dtype is not None else list(DTYPES)
    layouts = [layout] if layout else ["nchw", "channels_last"]
    out = []
    for case in all_cases(size, [op] if op else None, dtypes, layouts, variants):
        out += list(case_models(case).values())
    return out


def model(op: str, pass_: str, dtype: Union[str, torch.dtype] = "bf16", layout: str = "nchw",
          variant: Optional[str] = None, case: Optional[str] = None, size: str = "full") -> PassModel:
    """The model of one pass: ``op`` at bench ``size``, the bench case named ``case`` (default the
    op's first), ``variant`` (default the bench's arguments), e.g.
    ``model("aspp", "backward", dtype=torch.bfloat16).launches``."""
    if pass_ not in PASSES:
        raise ValueError(f"pass must be one of {PASSES}, got {pass_!r}")
    names = [v.name for v in VARIANTS[op]] if op in VARIANTS else []
    variant = variant or (names[0] if names else None)
    cases = [c for c in all_cases(size, [op], [_dtype_name(dtype)], [layout]) if c.variant.name == variant]
    if not cases:
        raise ValueError(f"no case for op={op!r} variant={variant!r}; variants: {names}")
    if case is not None:
        cases = [c for c in cases if c.shape.name == case]
        if not cases:
            raise ValueError(f"op {op!r} has no bench case {case!r}: {[s.name for s in op_cases.cases(op, size)]}")
    return case_models(cases[0])[pass_]


# --------------------------------------------------------------------------- report
def run_traffic(ops: Optional[Sequence[str]] = None, dtypes: Sequence[str] = tuple(DTYPES),
                layouts: Sequence[str] = ("nchw",), variants: bool = False, size: str = "full") -> Dict:
    rows = []
    for case in all_cases(size, ops, dtypes, layouts, variants):
        rows += [m.as_dict() for m in case_models(case).values()]
    return {"schema": "fastmtl-traffic/1", "model": "a model, not a measurement",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "triton": triton_version(), "torch": torch.__version__, "arch": f"sm_{ARCH}",
            "bandwidth_bytes_per_s": BANDWIDTH, "launch_us": LAUNCH_US, "size": size, "rows": rows}


def _mb(b: float) -> str:
    return f"{b / 1e6:.1f}"


def format_traffic(report: Dict, markdown: bool = False) -> str:
    head = ["op", "case", "variant", "dtype", "layout", "pass", "min MB", "fused MB", "fused/min", "launches",
            "eager MB", "eager/min", "eager launches", "floor us", "fused us", "eager us"]
    body = [[r["op"], r["case"], r["variant"], r["dtype"], r["layout"], r["pass_"], _mb(r["min_bytes"]),
             _mb(r["fused_bytes"]), f"{r['ratio']:.2f}", str(r["launches"]), _mb(r["eager_bytes"]),
             f"{r['eager_ratio']:.2f}", str(r["eager_launches"]), f"{r['floor_us']:.1f}", f"{r['time_us']:.1f}",
             f"{r['eager_time_us']:.1f}"] for r in report["rows"]]
    title = (f"fastmtl traffic -- a MODEL, not a measurement  {report['date']}  triton {report['triton']}  "
             f"{report['arch']} launches at bench size {report['size']}")
    rule = (f"time = bytes / {report['bandwidth_bytes_per_s'] / 1e12:.1f} TB/s (H200 measured copy bandwidth, "
            f"read+write) + launches x {report['launch_us']:.0f} us (assumed launch cost); a Triton launch moves each "
            f"distinct tensor argument it uses once, a torch op its inputs and outputs; views and allocations are free")
    if markdown:
        lines = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join([title, "", rule, ""] + lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([title, rule, fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])
