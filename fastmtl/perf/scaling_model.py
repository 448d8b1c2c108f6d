"""The scaling MODEL: THE train step's time on N GPUs under torchrun (one process per GPU, the
per-GPU batch fixed) and its weak-scaling efficiency t(1 GPU) / t(N GPUs), from the step MODEL's
kernel timeline (:mod:`fastmtl.perf.step_model`) and the communication the code issues on N GPUs,
priced by an alpha-beta model of NCCL's collectives on a named node and network (:data:`FABRICS`).
A model, not a measurement.

What ``fastmtl train`` runs on N > 1 CUDA GPUs (:func:`fastmtl.step.build_step`), per step:

* every BatchNorm is a ``SyncBatchNorm`` (:func:`fastmtl.step.build_train_model`; so a fused model
  keeps its BatchNorm + ReLU pairs unfused there, and its N-GPU scenarios come from a trace of that
  build): each forward one all-gathers ``2C + 1`` fp32 statistics and reads a device value on the
  host (its boolean-mask indexing), each backward one all-reduces ``2C``; the compute stream waits
  for both;
* ``--weighting fixed`` and the loss methods: ``DistributedDataParallel`` with the trainer's options
  (:func:`fastmtl.step.ddp_options`; :class:`~fastmtl.step.DDPOptions` says what each does): no
  buffer broadcast before the forward (SyncBatchNorm keeps the running statistics equal), gradients
  as views of the buckets. The gradients go in buckets, rebuilt after the first step in the order
  autograd produced them (the first bucket closes at >= 1 MiB, the others at >= 25 MiB). Where
  this torch's DDP has ``batched_grad_copy`` (2.13), each bucket, once its last gradient is in, is
  filled by one ``_foreach_copy_`` and divided by N in one kernel; otherwise each gradient is
  copied into its bucket, divided by N on the way, by one kernel when autograd accumulates it (the
  step's ``zero_grad(set_to_none=True)`` gives each backward fresh gradients, so the copy in stays).
  Each bucket is all-reduced on the network as soon as it is full, overlapping the rest of the
  backward; before the optimizer the step waits for the last one. Nothing is copied back: the
  buckets are the gradients. Loss methods also all-reduce their ``T`` float64 losses;
* gradient methods (:mod:`fastmtl.weighting.engine`, no DDP): no buffer broadcast either (the
  trainer's ``sync_buffers`` under SyncBatchNorm, as DDP's), the losses all-reduced, then
  ``params``: ``G (T, D_shared)`` fp32 all-reduced after the ``T`` backwards; ``rep``: the ``(T, T)`` float64 Gram matrix, then, after the encoder's backward, its
  flat fp32 gradient; both: the heads' combined fp32 gradient. All of it blocks the compute stream.

The network serves one collective at a time (one NCCL communicator), in issue order; the compute
stream runs the traced kernels in order. Not modelled: NVLS / SHARP, NCCL kernels slowing the
compute they overlap, stragglers, data loading, the fusion a SyncBatchNorm cuts under
``torch.compile`` (the compiled scenarios fuse the SyncBatchNorm build's kernels as on one GPU)."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from fastmtl.errors import ConfigError
from fastmtl.perf.step_model import GPUS, SCENARIOS, Gpu, Kernel, Scenario, _kernel_s, scenario_runs
from fastmtl.perf.step_model_trace import GradRecord, OpRecord, StepTrace, trace_step
from fastmtl.step import DDPOptions, ddp_options
from fastmtl.weighting import GRAD_MODES, METHODS

KIND = "MODEL (scaling: roofline step + alpha-beta NCCL collectives; not measured)"


@dataclass(frozen=True)
class Protocol:
    """One NCCL algorithm + protocol of the latency model: seconds per collective (``base_s``), per
    ring step inside a node (``nvlink_step_s``) and between nodes (``net_step_s``), and the share of
    the bus bandwidth it reaches. ``tree`` (all-reduce only): the latency of a tree, 2 x (GPUs per
    node - 1) NVLink steps and 2 x log2(nodes) network steps."""

    name: str
    base_s: float
    nvlink_step_s: float
    net_step_s: float
    bandwidth_share: float
    tree: bool = False


NCCL_PROTOCOLS = (Protocol("ring/LL", 6.6e-6, 0.6e-6, 2.7e-6, 1 / 4),
                  Protocol("ring/Simple", 8.4e-6, 3.4e-6, 14e-6, 1.0),
                  Protocol("tree/LL", 6.8e-6, 0.6e-6, 5.0e-6, 1 / 4, tree=True))
"""The latencies of NCCL's own tuner (NVIDIA/nccl ``src/graph/tuning.cc``: ``baseLat`` and
``hwLat`` of ring LL, ring Simple and tree LL, in us); LL reaches about a quarter of the bus
bandwidth (the tuner's factor for ring LL all-reduce; about 1/3.8 for tree LL). Each collective
costs what its fastest protocol costs, as NCCL's tuner picks."""


@dataclass(frozen=True)
class Fabric:
    """A multi-GPU node and its network: GPUs per node; the achievable NCCL bus bandwidth of a
    collective inside a node (B/s); the NICs per node (one per GPU, rail-optimized) and what one
    achieves (B/s); what a host sync costs (the GPU idles until the host has read the value and
    launched again, s); the NCCL protocols."""

    name: str
    gpus_per_node: int
    nvlink_bus_bw: float
    nic_bus_bw: float
    nics_per_node: int
    host_sync_s: float
    protocols: Tuple[Protocol, ...] = NCCL_PROTOCOLS

    @property
    def inter_node_bus_bw(self) -> float:
        """Bus bandwidth of a ring across nodes: NCCL runs one channel per NIC, so a node's NICs together
        carry it, unless NVLink inside the node is slower."""
        return min(self.nvlink_bus_bw, self.nics_per_node * self.nic_bus_bw)


_HGX = dict(gpus_per_node=8, nvlink_bus_bw=360e9, nic_bus_bw=40e9, nics_per_node=8, host_sync_s=15e-6)
FABRICS = {"h200": Fabric("HGX H200 (8 GPUs, NVLink 4 + NVSwitch; 8x 400 Gb/s InfiniBand NDR per node)", **_HGX),
           "h100": Fabric("HGX H100 (8 GPUs, NVLink 4 + NVSwitch; 8x 400 Gb/s InfiniBand NDR per node)", **_HGX)}
"""By :data:`fastmtl.perf.step_model.GPUS` key. NVLink 4: 18 links, 900 GB/s per GPU both ways, 450
GB/s each way (NVIDIA's H200 SXM system description, MLPerf Inference v4.1: "18x 4th Gen NVLink,
900GB/s"); the achievable ring bus bandwidth is an assumption, 80 %: 360 GB/s. Network: one 400
Gb/s (50 GB/s) NIC per GPU, eight per node, rail-optimized (NVIDIA's HGX H100/H200/B200 AI Factory
reference architecture, "2-8-9-400"); achievable an assumption, 80 %: 40 GB/s each. Host sync: an
assumption, 15 us."""

COLLECTIVES = ("all_reduce", "all_gather", "broadcast")
BN_FORWARD = {"native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
              "cudnn_batch_norm"}
"""Training-mode BatchNorm forward ops (a SyncBatchNorm's all-gather on N GPUs)."""
BN_BACKWARD = {"native_batch_norm_backward", "cudnn_batch_norm_backward", "batch_norm_backward"}
FIRST_BUCKET_BYTES, BUCKET_BYTES = 1024 * 1024, 25 * 1024 * 1024
"""DDP's defaults (``torch.distributed._DEFAULT_FIRST_BUCKET_BYTES``, ``bucket_cap_mb=25``)."""
MULTI_GPU_DDP = ddp_options(sync_bn=True)
"""What ``fastmtl train`` builds DDP with on N > 1 CUDA GPUs (SyncBatchNorm), with this torch."""
CAUSES = ("DDP gradients", "gradients", "method", "SyncBatchNorm", "host syncs", "unfused BN + ReLU", "buffers",
          "copies")
"""What each added millisecond and byte is for: DDP's bucket all-reduces (the part the backward
does not hide), a gradient method's gradient all-reduces, its losses / Gram all-reduces,
SyncBatchNorm's collectives, SyncBatchNorm's host syncs, the BatchNorm + ReLU pairs a fused model
keeps unfused under SyncBatchNorm (the N-GPU build's kernels less the 1-GPU build's), the buffer
broadcasts (with DDP's flatten and copy-back kernels), the gradient copies: DDP's into its buckets
(with the division by N), the engine's flatten, divide and copy-back kernels."""


def nodes_of(gpus: int, fabric: Fabric) -> int:
    """Nodes of a ``gpus``-GPU job: one up to a node's GPUs, else whole nodes (ValueError otherwise)."""
    if gpus < 1 or (gpus > fabric.gpus_per_node and gpus % fabric.gpus_per_node):
        raise ValueError(f"{gpus} GPUs: 1 to {fabric.gpus_per_node}, or whole nodes of {fabric.gpus_per_node}")
    return max(1, gpus // fabric.gpus_per_node)


def collective_s(kind: str, nbytes: int, gpus: int, fabric: Fabric) -> float:
    """Seconds of one NCCL collective over ``gpus`` GPUs; ``nbytes``: the buffer of an all-reduce or a
    broadcast, the gathered output of an all-gather. Per protocol: latency = base + steps inside a
    node x NVLink step + steps between nodes x network step (ring steps: all-reduce 2(N-1), of them
    2(M-1) between the M nodes; all-gather and broadcast N-1 and M-1); time = latency + traffic x
    ``nbytes`` / (bus bandwidth x share), traffic 2(N-1)/N, (N-1)/N and 1; the fastest protocol."""
    if kind not in COLLECTIVES:
        raise ValueError(f"unknown collective {kind!r}; valid: {', '.join(COLLECTIVES)}")
    if gpus == 1:
        return 0.0
    nodes = nodes_of(gpus, fabric)
    twice = 2 if kind == "all_reduce" else 1
    steps, inter = twice * (gpus - 1), twice * (nodes - 1)
    traffic = 1.0 if kind == "broadcast" else twice * (gpus - 1) / gpus
    bus = fabric.nvlink_bus_bw if nodes == 1 else fabric.inter_node_bus_bw
    best = math.inf
    for p in fabric.protocols:
        if p.tree and kind != "all_reduce":
            continue
        if p.tree:
            latency = p.base_s + 2 * ((gpus // nodes - 1) * p.nvlink_step_s + math.log2(nodes) * p.net_step_s)
        else:
            latency = p.base_s + (steps - inter) * p.nvlink_step_s + inter * p.net_step_s
        best = min(best, latency + traffic * nbytes / (bus * p.bandwidth_share))
    return best


def ddp_buckets(grads: Sequence[GradRecord], first_bytes: int = FIRST_BUCKET_BYTES,
                bytes_cap: int = BUCKET_BYTES) -> List[List[int]]:
    """DDP's rebuilt buckets (indices into ``grads``, given in the order autograd produced them), as
    the reducer's ``compute_bucket_assignment_by_size`` makes them: per dtype, gradients join the
    open bucket, which closes once it holds >= its limit (``first_bytes`` for a dtype's first bucket,
    ``bytes_cap`` after); the open buckets close at the end, in the order their dtype first came."""
    buckets: List[List[int]] = []
    open_: Dict[str, Tuple[List[int], int]] = {}
    limits: Dict[str, int] = {}
    for i, g in enumerate(grads):
        members, size = open_.get(g.dtype, ([], 0))
        members, size = members + [i], size + g.bytes
        if size >= limits.setdefault(g.dtype, first_bytes):
            buckets.append(members)
            limits[g.dtype] = bytes_cap
            open_.pop(g.dtype, None)
        else:
            open_[g.dtype] = (members, size)
    return buckets + [members for members, _ in open_.values()]


@dataclass(frozen=True)
class Item:
    """One thing a GPU's step does, in issue order. ``where``: ``compute`` (``seconds`` on the compute
    stream), ``wait`` (a collective the compute stream waits for), ``async`` (a collective the compute
    stream does not wait for), ``join`` (the compute stream waits for the network). ``cause``: one of
    :data:`CAUSES`, or ``step`` for the traced kernels; ``collective`` and ``bytes`` (this GPU's
    payload: the buffer all-reduced or broadcast, its share of an all-gather) for the collectives."""

    where: str
    cause: str
    seconds: float = 0.0
    collective: Optional[str] = None
    bytes: int = 0


def run_items(items: Sequence[Item]) -> Tuple[float, Dict[str, float]]:
    """``(seconds of the step, {cause: seconds it added to the compute stream})``: the compute stream
    and the network each do one thing at a time; a collective starts once it is issued and the
    network is free."""
    t = net = 0.0
    added: Dict[str, float] = defaultdict(float)
    for it in items:
        before = t
        if it.where == "compute":
            t += it.seconds
        elif it.where == "wait":
            t = net = max(t, net) + it.seconds
        elif it.where == "async":
            net = max(t, net) + it.seconds
        elif it.where == "join":
            t = max(t, net)
        else:
            raise ValueError(f"unknown item {it.where!r}")
        if it.cause != "step":
            added[it.cause] += t - before
    return t, dict(added)


class _Builder:
    """The items of one scenario's step on ``gpus`` GPUs (see the module docstring)."""

    def __init__(self, run: Scenario, gpu: Gpu, fabric: Fabric, gpus: int):
        self.run, self.gpu, self.fabric, self.gpus = run, gpu, fabric, gpus
        self.items: List[Item] = [Item("compute", "step", gpu.launch_s)] if run.graphs else []

    def kernel(self, cause: str, nbytes: int, launches: int = 1) -> None:
        """An eager memory-bound kernel moving ``nbytes`` (read + write), outside any CUDA graph."""
        self.items.append(Item("compute", cause, _kernel_s(Kernel(cause, 0, nbytes, launches), self.gpu)))

    def collective(self, where: str, cause: str, kind: str, payload: int) -> None:
        nbytes = payload * self.gpus if kind == "all_gather" else payload
        self.items.append(Item(where, cause, collective_s(kind, nbytes, self.gpus, self.fabric), kind, payload))

    def mean(self, cause: str, payload: int) -> None:
        """``Sync.mean_``: an all-reduce the compute waits for, then one kernel dividing by N."""
        self.collective("wait", cause, "all_reduce", payload)
        self.kernel("copies", 2 * payload)

    def traced_kernels(self, after_kernel=None, before_optimizer=None) -> None:
        """The traced kernels in order, on N > 1 GPUs with SyncBatchNorm's collectives; ``after_kernel(ops)``
        after each kernel (the op indices it ran), ``before_optimizer()`` before the first kernel after the
        backward."""
        ops = self.run.trace.ops
        synced = self.gpus > 1
        last_backward = max((i for i, o in enumerate(ops) if o.phase == "backward"), default=len(ops))
        first = 0
        for k in self.run.kernels:
            span = range(first, k.last_op + 1)
            first = k.last_op + 1
            if before_optimizer is not None and span.start > last_backward:
                before_optimizer()
                before_optimizer = None
            for i in span if synced else ():
                if ops[i].name in BN_FORWARD:
                    self.collective("wait", "SyncBatchNorm", "all_gather", (2 * _channels(ops[i]) + 1) * 4)
                    self.items.append(Item("compute", "host syncs", self.fabric.host_sync_s))
                elif ops[i].name in BN_BACKWARD:
                    self.collective("wait", "SyncBatchNorm", "all_reduce", 2 * _channels(ops[i]) * 4)
            self.items.append(Item("compute", "step", _kernel_s(k, self.gpu, launch_cost=not self.run.graphs)))
            if after_kernel is not None:
                after_kernel(span)

    def broadcast_buffers_coalesced(self) -> None:
        """DDP's ``_sync_buffers``: per dtype one broadcast, of the buffers flattened into one and copied
        back (a lone buffer is broadcast in place)."""
        by_dtype: Dict[str, List[int]] = defaultdict(list)
        for dtype, nbytes in self.run.trace.buffers:
            by_dtype[dtype].append(nbytes)
        for sizes in by_dtype.values():
            flattened = len(sizes) > 1
            if flattened:
                self.kernel("buffers", 2 * sum(sizes))
            self.collective("wait", "buffers", "broadcast", sum(sizes))
            for nbytes in sizes if flattened else ():
                self.kernel("buffers", 2 * nbytes)

    def ddp(self, losses: bool, options: DDPOptions) -> None:
        """The step under DDP built with ``options``; ``losses``: a loss method's all-reduce of its losses."""
        grads = [g for g in self.run.trace.grads if g.ready is not None]
        buckets = ddp_buckets(grads)
        pending = [len(b) for b in buckets]
        bucket_of = {i: b for b, members in enumerate(buckets) for i in members}
        ready_at: Dict[int, List[int]] = defaultdict(list)
        for i, g in enumerate(grads):
            ready_at[g.ready - 1].append(i)  # accumulated right after the op that made it
        launched = 0

        def after_kernel(span):
            nonlocal launched
            for op in span:
                for i in ready_at.get(op, ()):
                    b = bucket_of[i]
                    pending[b] -= 1
                    if not options.batched_grad_copy:
                        self.kernel("copies", 2 * grads[i].bytes)  # mul_out into the bucket view, by 1/N
                    elif pending[b] == 0:  # one _foreach_copy_ (one launch, as the step model counts them), one div_
                        nbytes = sum(grads[j].bytes for j in buckets[b])
                        self.kernel("copies", 2 * nbytes)
                        self.kernel("copies", 2 * nbytes)
            while launched < len(buckets) and pending[launched] == 0:  # the reducer launches them in order
                self.collective("async", "DDP gradients", "all_reduce", sum(grads[i].bytes for i in buckets[launched]))
                launched += 1

        if options.sync_buffers:
            self.broadcast_buffers_coalesced()
        if losses:
            self.mean("method", 8 * len(self.run.trace.tasks))
        self.traced_kernels(after_kernel, lambda: self.items.append(Item("join", "DDP gradients")))

    def engine(self, grad_mode: str, sync_buffers: bool) -> None:
        """The step of a gradient method (:class:`fastmtl.weighting.engine.WeightedBackward`;
        ``sync_buffers``: its coalesced buffer broadcast first); its gradient all-reduces go after the
        traced kernels (where does not matter: all of it blocks)."""
        trace = self.run.trace
        tasks = len(trace.tasks)
        shared = [g for g in trace.grads if g.shared]
        shared_numel = sum(g.numel for g in shared)
        if sync_buffers:
            self.broadcast_buffers_coalesced()
        self.mean("method", 8 * tasks)
        self.traced_kernels()
        if grad_mode == "params":
            self.mean("gradients", 4 * tasks * shared_numel)
        else:
            self.collective("wait", "method", "all_reduce", 8 * tasks * tasks)
            self.kernel("copies", 2 * 4 * shared_numel)  # flat(): one cat
            self.mean("gradients", 4 * shared_numel)
            self.kernel("copies", 2 * 4 * shared_numel, launches=len(shared))  # write_grads: a copy each
        self.mean("gradients", 4 * sum(g.numel for g in trace.grads if not g.shared))


def _channels(op: OpRecord) -> int:
    """A BatchNorm op's channels: its smallest output is a per-channel fp32 statistic or gradient."""
    return min(op.write_bytes) // 4


def step_items(run: Scenario, gpu: Gpu, fabric: Fabric, gpus: int, weighting: str = "fixed",
               grad_mode: str = "params", ddp: DDPOptions = MULTI_GPU_DDP) -> List[Item]:
    """The items of ``run``'s step on ``gpus`` GPUs under ``--weighting weighting`` (``grad_mode``:
    a gradient method's ``--weighting-grads``; ``ddp``: the DDP options of the other methods, whose
    ``sync_buffers`` a gradient method's step shares); on one GPU just the traced kernels."""
    b = _Builder(run, gpu, fabric, gpus)
    if gpus == 1:
        b.traced_kernels()
    elif METHODS[weighting].kind == "gradient":
        b.engine(grad_mode, ddp.sync_buffers)
    else:
        b.ddp(weighting != "fixed", ddp)
    return b.items


def traffic(items: Sequence[Item]) -> Dict[str, dict]:
    """``{cause: {"collectives", "blocking", "bytes"}}`` of one step's items (bytes: this GPU's payload)."""
    out: Dict[str, dict] = {}
    for it in items:
        if it.collective is not None:
            t = out.setdefault(it.cause, {"collectives": 0, "blocking": 0, "bytes": 0})
            t["collectives"] += 1
            t["blocking"] += it.where == "wait"
            t["bytes"] += it.bytes
    return out


def _traced(weighting: str, grad_mode: str, **kwargs) -> Tuple[Dict[str, Scenario], Dict[str, Scenario]]:
    """The scenarios of one GPU and of N > 1 GPUs. On N GPUs ``fastmtl train`` builds the fused model
    with SyncBatchNorms (:func:`fastmtl.step.build_train_model`): no fused BatchNorm + ReLU there."""
    def trace(**flags) -> StepTrace:
        return trace_step(weighting=weighting, grad_mode=grad_mode, **flags, **kwargs)

    try:
        plain = trace(fused=False)
        one = scenario_runs(plain, trace(fused=True), trace(fused=True, compiling=True))
        many = scenario_runs(plain, trace(fused=True, sync_bn=True))
        return one, many
    except (NotImplementedError, RuntimeError) as e:  # e.g. a CUDA random generator, a data-dependent op on meta
        first = str(e).split(". ")[0].splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"--weighting {weighting}: the step trace cannot run it on the fake device "
                          f"({first})") from None


def scaling_configs(weightings: Sequence[str], modes: Sequence[str] = ("params", "rep")) -> List[Tuple[str, str]]:
    """``(weighting, grad_mode)`` of every method of ``weightings``: each mode of ``modes`` for a gradient
    method, ``params`` (unused) for a loss method; ConfigError naming the flag for what it cannot price."""
    for m in modes:
        if m not in GRAD_MODES:
            raise ConfigError(f"--weighting-grads: {' and/or '.join(GRAD_MODES)}, got {m!r}")
    configs = []
    for name in weightings:
        if name not in METHODS:
            raise ConfigError(f"--weighting: unknown method {name!r}; valid choices: {', '.join(METHODS)}")
        method = METHODS[name]
        if method.kind != "gradient":
            configs.append((name, "params"))
            continue
        if "rep" in modes and not method.gram_only:
            raise ConfigError(f"--weighting {name} --weighting-grads rep: the scaling model prices the rep mode of "
                              "the Gram-matrix methods only")
        configs += [(name, m) for m in modes]
    return configs


def scaling_model(model: str = "default", gpu: str = "h200", batch: int = 8, size: Tuple[int, int] = (256, 512),
                  channels_last: bool = True, gpus: Sequence[int] = (1, 2, 4, 8),
                  weightings: Sequence[str] = ("fixed",), modes: Sequence[str] = ("params", "rep"),
                  ddp: DDPOptions = MULTI_GPU_DDP) -> dict:
    """The scaling MODEL report (JSON-able): for each method of ``weightings`` (a gradient method in
    each mode of ``modes``) and each scenario, the step's modelled ms on each GPU count of ``gpus``
    (``batch`` images per GPU; 1 GPU is the efficiency's base), its efficiency t(1) / t(N), what N
    GPUs added (ms by cause) and the step's traffic per GPU; ``ddp``: the DDP options priced (the
    trainer's with this torch by default)."""
    g, fabric = GPUS[gpu], FABRICS[gpu]
    for n in gpus:
        nodes_of(n, fabric)
    out = []
    for weighting, grad_mode in scaling_configs(weightings, modes):
        gradient = METHODS[weighting].kind == "gradient"
        one, many = _traced(weighting, grad_mode, model=model, batch=batch, size=size, channels_last=channels_last)
        plain = one["eager"].trace
        per_scenario = {}
        for name in SCENARIOS:
            base = run_items(step_items(one[name], g, fabric, 1, weighting, grad_mode, ddp))[0]
            rows = []
            for n in gpus:
                run = one[name] if n == 1 else many[name]
                seconds, added = run_items(step_items(run, g, fabric, n, weighting, grad_mode, ddp))
                unfused = _compute_s(run, g) - _compute_s(one[name], g)
                if unfused:
                    added["unfused BN + ReLU"] = unfused
                rows.append({"gpus": n, "ms": round(seconds * 1e3, 3), "efficiency": round(base / seconds, 4),
                             "added_ms": {c: round(added[c] * 1e3, 3) for c in CAUSES if c in added}})
            per_scenario[name] = rows
        ready = [r for r in plain.grads if r.ready is not None]
        out.append({"weighting": weighting, "grad_mode": grad_mode if gradient else None,
                    "communication": "engine" if gradient else "DDP",
                    "gradient_bytes": sum(r.bytes for r in plain.grads),
                    "shared_gradient_bytes": sum(r.bytes for r in plain.grads if r.shared),
                    "buckets": [] if gradient else [sum(ready[i].bytes for i in b) for b in ddp_buckets(ready)],
                    "traffic": traffic(step_items(many["eager"], g, fabric, 2, weighting, grad_mode, ddp)),
                    "scenarios": per_scenario})
    return {"kind": KIND, "model": model, "gpu": g.name, "fabric": _fabric_json(fabric), "batch_per_gpu": batch,
            "size": list(size), "layout": "channels_last" if channels_last else "nchw", "amp": "bf16",
            "gpus": list(gpus), "ddp": {"gradient_as_bucket_view": True, **asdict(ddp)},
            "configs": out}


def _compute_s(run: Scenario, gpu: Gpu) -> float:
    """Seconds of ``run``'s traced kernels alone."""
    return sum(_kernel_s(k, gpu, launch_cost=not run.graphs) for k in run.kernels)


def _fabric_json(f: Fabric) -> dict:
    return {"name": f.name, "gpus_per_node": f.gpus_per_node, "nvlink_bus_gb_s": f.nvlink_bus_bw / 1e9,
            "nic_bus_gb_s": f.nic_bus_bw / 1e9, "nics_per_node": f.nics_per_node,
            "inter_node_bus_gb_s": f.inter_node_bus_bw / 1e9, "host_sync_us": f.host_sync_s * 1e6,
            "protocols": [{"name": p.name, "base_us": p.base_s * 1e6, "nvlink_step_us": p.nvlink_step_s * 1e6,
                           "net_step_us": p.net_step_s * 1e6, "bandwidth_share": p.bandwidth_share}
                          for p in f.protocols]}


def _config_name(c: dict) -> str:
    return f"--weighting {c['weighting']}" + (f" --weighting-grads {c['grad_mode']}" if c["grad_mode"] else "")


def format_scaling_model(report: dict) -> str:
    """The report as text tables, labelled MODEL."""
    r, f = report, report["fabric"]
    lines = [f"SCALING MODEL (not measured): {r['model']} train step, {r['fabric']['name']}, {r['amp']}, batch "
             f"{r['batch_per_gpu']} per GPU at {r['size'][0]}x{r['size'][1]}, {r['layout']}; weak scaling, "
             f"efficiency = t(1 GPU) / t(N GPUs)",
             f"bus bandwidth {f['nvlink_bus_gb_s']:.0f} GB/s in a node, {f['inter_node_bus_gb_s']:.0f} GB/s across "
             "nodes "
             f"({f['nics_per_node']} NICs x {f['nic_bus_gb_s']:.0f} GB/s); NCCL latencies (us, base + NVLink / network "
             "step): " + ", ".join(f"{p['name']} {p['base_us']:g} + {p['nvlink_step_us']:g} / {p['net_step_us']:g}"
                                  for p in f["protocols"]) + f"; host sync {f['host_sync_us']:g} us",
             "DDP (fixed and loss methods): gradients as bucket views, "
             + ("batched_grad_copy" if r["ddp"]["batched_grad_copy"] else "a copy into its bucket per gradient")
             + (", buffers broadcast every forward" if r["ddp"]["sync_buffers"] else ", no buffer broadcast")]
    for c in r["configs"]:
        lines.append(f"\n{_config_name(c)} ({c['communication']}"
                     + (f", {len(c['buckets'])} buckets" if c["buckets"] else "")
                     + f"; gradients {c['gradient_bytes'] / 1e6:.1f} MB, shared "
                       f"{c['shared_gradient_bytes'] / 1e6:.1f} MB)")
        lines.append(f"{'scenario':<22} {'1 GPU ms':>9}" + "".join(f" {f'{n} GPUs':>15}" for n in r["gpus"][1:]))
        for name, rows in c["scenarios"].items():
            lines.append(f"{name:<22} {rows[0]['ms']:>9.2f}"
                         + "".join(f" {row['ms']:>8.2f} {row['efficiency']:>5.0%}" for row in rows[1:]))
        last = c["scenarios"]["eager"][-1]
        lines.append(f"added at {last['gpus']} GPUs (eager, ms): "
                     + ", ".join(f"{cause} {ms:.2f}" for cause, ms in last["added_ms"].items()))
        lines.append("traffic per GPU per step: " + "; ".join(
            f"{cause} {t['bytes'] / 1e6:.2f} MB in {t['collectives']} ({t['blocking']} blocking)"
            for cause, t in c["traffic"].items()))
    return "\n".join(lines)
