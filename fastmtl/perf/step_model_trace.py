"""Trace THE train step (:func:`fastmtl.step.build_step`'s ``StepParts.step``) on the fake CUDA
device under CUDA bf16 autocast rules: every aten op (and fused-op launch) with its FLOPs, bytes,
launches, group and phase, the host syncs, and each parameter's gradient (bytes, and when autograd
accumulated it). Nothing runs on a GPU: this feeds a MODEL.

Autocast on meta tensors does nothing (torch's autocast casts only tensors of its device), so the
CUDA rules that matter here are applied by a ``TorchFunctionMode`` above autograd, as autocast
itself does: conv / matmul inputs to bf16 (parameters cast once per forward), upsampling and
the fp32-list losses to fp32.

Layouts (an ASSUMPTION of the model): cuDNN runs half-precision tensor-core convolutions in NHWC,
so a convolution (or its backward) on NCHW bf16/fp16 tensors transposes each activation, weight
and gradient it reads into NHWC and each one it writes back (the ``nchwToNhwcKernel`` /
``nhwcToNchwKernel`` launches of profiles of NCHW AMP convnets): a read and a write of each, one
launch each, recorded as the op's ``transposes``. channels_last tensors need none."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils import _foreach_utils as foreach_utils
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from fastmtl.config import Config
from fastmtl.data.classes import NUM_CLASSES
from fastmtl.perf.aot.harness import Launch, TorchOp, fake_cuda
from fastmtl.perf.inputs import random_batch, synthetic_info
from fastmtl.perf.step_model_groups import GroupNamer
from fastmtl.runtime import Runtime
from fastmtl import step as step_module
from fastmtl.step import build_step
from fastmtl.weighting.engine import split_parameters

FOREACH_DEVICES = tuple(foreach_utils._get_foreach_kernels_supported_devices())
"""Devices with foreach kernels; the trace adds ``meta`` (its tensors stand for CUDA ones), so the
optimizer and the gradient-norm check take their CUDA (foreach) paths."""
SYNC_OPS = {"_local_scalar_dense", "nonzero", "is_nonzero", "item"}
"""aten ops that read a device value on the host (a device-to-host sync)."""

LOWER_PRECISION = {torch.conv2d, F.conv2d, F.linear, torch.matmul, torch.mm, torch.bmm, torch.addmm,
                   torch.baddbmm, torch.conv_transpose2d}
"""CUDA autocast's lower-precision list (the ones this model can call): float inputs to bf16."""
FP32 = {F.interpolate, F.l1_loss, F.mse_loss, F.smooth_l1_loss, F.huber_loss, F.nll_loss, F.log_softmax, F.softmax,
        F.cross_entropy, torch._C._nn.upsample_bilinear2d, torch._C._nn.upsample_nearest2d, torch._C._nn.l1_loss,
        torch._C._nn.mse_loss, torch._C._nn.smooth_l1_loss, torch._C._nn.huber_loss, torch._C._nn.nll_loss2d,
        torch._C._nn.nll_loss, torch._C._nn.nll_loss_nd, torch.log_softmax, torch.softmax, torch.exp, torch.log,
        torch.pow, torch.rsqrt, torch.sum, torch.prod, torch.cumsum, torch.norm}
"""CUDA autocast's fp32 list (those this model can call): bf16 inputs to fp32. The Python functions
that wrap them (``F.interpolate``, ``F.l1_loss``, ...) are listed too: a mode sees only the outer call."""


@dataclass
class OpRecord:
    """One aten op of the step. ``launches``: kernels it launches (0 for views / queries);
    ``bytes``: its inputs' and outputs' sizes; ``reads`` / ``writes``: the storages it touches
    (for the compile scenario's fusion); ``phase``: forward, loss, backward or optimizer."""

    name: str
    group: str
    phase: str
    flops: int
    bytes: int
    launches: int
    reads: Tuple[int, ...] = ()
    writes: Tuple[int, ...] = ()
    read_bytes: Tuple[int, ...] = ()  # of each storage in reads
    write_bytes: Tuple[int, ...] = ()
    transposes: int = 0  # NCHW <-> NHWC copies around a half-precision cuDNN convolution
    transpose_bytes: int = 0  # their reads and writes


@dataclass
class GradRecord:
    """One trainable parameter's gradient: ``numel`` elements, ``bytes`` in the gradient's ``dtype``
    (fp32 parameters under autocast get fp32 gradients); ``shared``: an encoder parameter (what
    gradient methods balance); ``ready``: the number of ops traced when autograd accumulated it into
    ``.grad`` (DDP's hook fires then), None when no backward did (a gradient method's ``params`` mode
    writes ``.grad`` itself)."""

    name: str
    dtype: str
    numel: int
    bytes: int
    shared: bool
    ready: Optional[int] = None


@dataclass
class StepTrace:
    """The ops of one traced step, in order, the host syncs seen, the parameters' gradients (in the
    order autograd accumulated them, as DDP rebuilds its buckets; then the others, in parameter order),
    the module buffers' ``(dtype, bytes)`` and the step's tasks."""

    ops: List[OpRecord] = field(default_factory=list)
    host_syncs: int = 0
    sync_ops: List[str] = field(default_factory=list)
    grads: List[GradRecord] = field(default_factory=list)
    buffers: List[Tuple[str, int]] = field(default_factory=list)
    tasks: Tuple[str, ...] = ()


class _AutocastRules(TorchFunctionMode):
    """CUDA autocast's casts, applied above autograd while ``torch.autocast('cuda')`` is enabled."""

    def __init__(self, namer: GroupNamer):
        super().__init__()
        self.namer = namer
        self.weight_cache: Dict[int, torch.Tensor] = {}

    def _cast(self, args, kwargs, src, dst):
        def cast(t):
            if not (isinstance(t, torch.Tensor) and t.dtype == src):
                return t
            if t.is_leaf and t.requires_grad:  # autocast caches the casts of parameters
                key = id(t)
                if key not in self.weight_cache:
                    self.weight_cache[key] = t.to(dst)
                    self.namer.alias(self.weight_cache[key], t)
                return self.weight_cache[key]
            return t.to(dst)

        cast_args = [cast(a) if not isinstance(a, (list, tuple)) else type(a)(map(cast, a)) for a in args]
        return cast_args, {k: cast(v) for k, v in kwargs.items()}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.is_autocast_enabled("cuda"):  # (trace_step clears the cache between steps)
            if func in LOWER_PRECISION:
                args, kwargs = self._cast(args, kwargs, torch.float32, torch.get_autocast_dtype("cuda"))
            elif func in FP32:
                args, kwargs = self._cast(args, kwargs, torch.get_autocast_dtype("cuda"), torch.float32)
        return func(*args, **kwargs)


class _Tracer(TorchDispatchMode):
    """Above the fake device's recorder: counts host syncs (answering them with a plausible
    value: True / 1) and turns each op and the launches under it into an :class:`OpRecord`."""

    def __init__(self, harness, group_of):
        super().__init__()
        self.harness, self.group_of = harness, group_of
        self.trace = StepTrace()
        self.phase = "forward"
        self.alive: List[torch.UntypedStorage] = []  # every result's storage: no address (storage id) is reused

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        base = func.__name__.split(".")[0]
        if base in SYNC_OPS and args[0].is_cuda:  # a CPU scalar (e.g. Adam's step count) is no device sync
            self.trace.host_syncs += 1
            self.trace.sync_ops.append(f"{base} ({self.phase})")
            if base == "nonzero":
                return torch.empty((args[0].numel(), args[0].dim()), dtype=torch.long, device="meta")
            return True if args[0].dtype == torch.bool else 1
        if _to_host(func, args, kwargs):  # e.g. ``.cpu()`` of a method's weights: a sync, answered with zeros
            self.trace.host_syncs += 1
            self.trace.sync_ops.append(f"to_cpu ({self.phase})")
            return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        if _same_device_copy(func, args, kwargs):  # ``.to("cuda")`` of a "CUDA" tensor: no copy on a GPU
            return func(*args, **kwargs)
        start = len(self.harness.timeline.events)
        out = func(*args, **kwargs)
        events = self.harness.timeline.events[start:]
        self.alive += [t.untyped_storage() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        launches, reads, writes = 0, [], []
        for e in events:
            if isinstance(e, Launch):
                launches += 1
                reads += list(e.tensors.values())
            elif isinstance(e, TorchOp) and e.kind == "compute":
                launches += 1
                reads += [t for i, t in enumerate(e.inputs) if i not in e.written_only]
                writes += list(e.outputs) + [e.inputs[i] for i in e.written_only]
        if not launches and _writes_in_place(func):  # e.g. _foreach_mul_ (no tensor result, so a "meta" event)
            reads, writes = _in_place_tensors(func, args, kwargs)
            launches = 1 if writes else 0
            reads, writes = [self.harness.info(t) for t in reads], [self.harness.info(t) for t in writes]
        nbytes = sum(t.nbytes for t in reads + writes)
        if launches:
            packet = func.overloadpacket
            flops = int(flop_registry[packet](*args, **kwargs, out_val=out)) if packet in flop_registry else 0
            tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            if torch._C._current_graph_task_id() != -1:
                self.phase = "backward"
            elif self.phase == "backward":  # after the backward: the gradient checks and the optimizer
                self.phase = "optimizer"
            group, path = self.group_of(func, tensors, self.phase)
            self.group_of.tag([t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)], path)
            transposed = _nchw_conv_tensors(func, args, out)
            self.trace.ops.append(OpRecord(base if func.namespace == "aten" else f"{func.namespace}::{base}",
                                           group, self.phase, flops, nbytes, launches,
                                           tuple(t.storage for t in reads), tuple(t.storage for t in writes),
                                           tuple(t.nbytes for t in reads), tuple(t.nbytes for t in writes),
                                           len(transposed), sum(2 * t.nbytes for t in transposed)))
        return out


CONV_PACKETS = (torch.ops.aten.convolution, torch.ops.aten.convolution_backward)


def _nchw_conv_tensors(func, args, out) -> List[torch.Tensor]:
    """The tensors of a half-precision convolution (forward or backward) that are transposed to or
    from NHWC around it (see the module's layout assumption): its 4-d inputs, weights, outputs and
    gradients that are not channels_last-contiguous. None for fp32 (no tensor cores assumed) or
    for any other op."""
    if func.overloadpacket not in CONV_PACKETS:
        return []
    if func.overloadpacket is torch.ops.aten.convolution:
        tensors = [args[0], args[1], out]  # input, weight, output
    else:  # grad_output, input, weight, then each gradient computed (grad_input, grad_weight)
        tensors = [args[0], args[1], args[2]] + [t for t in out[:2] if isinstance(t, torch.Tensor)]
    if tensors[0].dtype not in (torch.bfloat16, torch.float16):
        return []
    return [t for t in tensors if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last)]


def _same_device_copy(func, args, kwargs) -> bool:
    """A ``_to_copy`` to CUDA of a fake-CUDA tensor, dtype unchanged: on a GPU ``.to`` returns the
    tensor itself (on the fake device it copies: meta tensors move to the "cuda" meta device)."""
    if func is not torch.ops.aten._to_copy.default or kwargs.get("device") is None:
        return False
    x = args[0]
    return (torch.device(kwargs["device"]).type == "cuda" and x.is_cuda
            and kwargs.get("dtype") in (None, x.dtype) and kwargs.get("memory_format") is None)


def _to_host(func, args, kwargs) -> bool:
    """A ``_to_copy`` of a fake-CUDA tensor to the CPU (a device-to-host copy)."""
    return (func is torch.ops.aten._to_copy.default and kwargs.get("device") is not None
            and torch.device(kwargs["device"]).type == "cpu" and args[0].is_cuda)


def _writes_in_place(func) -> bool:
    return any(a.alias_info is not None and a.alias_info.is_write for a in func._schema.arguments)


def _in_place_tensors(func, args, kwargs) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """``(read, written)`` device tensors of an op that writes its arguments in place; tensors on
    the CPU (e.g. Adam's step counts) are the host's work, not a kernel's."""
    reads, writes = [], []
    values = list(args) + [kwargs.get(a.name) for a in func._schema.arguments[len(args):]]
    for a, v in zip(func._schema.arguments, values):
        tensors = [t for t in tree_flatten(v)[0] if isinstance(t, torch.Tensor) and t.is_cuda]
        reads += tensors
        if a.alias_info is not None and a.alias_info.is_write:
            writes += tensors
    return reads, writes


@contextlib.contextmanager
def _as_compiled(model: torch.nn.Module) -> Iterator[None]:
    """While any module of ``model`` runs its forward (the whole model, or the encoder and the heads
    apart as ``--weighting-grads rep`` calls them), ``torch.compiler.is_compiling()`` answers True,
    so its modules take the paths ``torch.compile`` would trace (:class:`fastmtl.nn.FusedBatchNormReLU`:
    ``F.batch_norm`` + ``relu``); the loss, the weighting method and the optimizer see the real answer."""
    real = torch.compiler.is_compiling
    depth = [0]

    def enter(_module, _args):
        depth[0] += 1
        torch.compiler.is_compiling = lambda: True

    def leave(_module, _args, _out):
        depth[0] -= 1
        if not depth[0]:
            torch.compiler.is_compiling = real

    modules = list(model.modules())
    handles = [m.register_forward_pre_hook(enter) for m in modules] + [m.register_forward_hook(leave) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        torch.compiler.is_compiling = real


def _model_config(model: str, channels_last: bool, fused: bool, weighting: str, grad_mode: str) -> Config:
    cfg = Config(channels_last=channels_last, fused=fused, weighting=weighting, weighting_grads=grad_mode)
    return cfg if model == "default" else replace(cfg, model=model)


@contextlib.contextmanager
def _gradient_hooks(model: nn.Module, tracer: _Tracer) -> Iterator[Dict[str, int]]:
    """``{parameter name: ops traced when autograd accumulated its gradient}`` of the steps run inside."""
    ready: Dict[str, int] = {}

    def accumulated(name):
        return lambda _p: ready.__setitem__(name, len(tracer.trace.ops))

    handles = [p.register_post_accumulate_grad_hook(accumulated(n)) for n, p in model.named_parameters()
               if p.requires_grad]
    try:
        yield ready
    finally:
        for h in handles:
            h.remove()


def _grad_records(model: nn.Module, ready: Dict[str, int]) -> List[GradRecord]:
    """The gradients in the order ``ready`` saw them accumulated (a dict keeps its insertion order), then the rest."""
    shared = {id(p) for p in split_parameters(model)[0]} if hasattr(model, "encoder") else set()
    records = {n: GradRecord(n, _dtype_name(p), p.numel(), p.numel() * p.element_size(), id(p) in shared, ready.get(n))
               for n, p in model.named_parameters() if p.requires_grad}
    return [records[n] for n in ready] + [r for n, r in records.items() if n not in ready]


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def trace_step(model: str = "default", batch: int = 8, size: Tuple[int, int] = (256, 512), channels_last: bool = True,
               fused: bool = False, arch: int = 90, weighting: str = "fixed", grad_mode: str = "params",
               compiling: bool = False, sync_bn: bool = False) -> StepTrace:
    """Trace one train step of ``model`` (a zoo name or ``default``; ``fused``: with fastmtl's fused
    ops) at ``batch`` images of ``size`` ``(H, W)``, bf16 autocast, on the fake CUDA device of compute
    capability ``arch``, under ``--weighting weighting`` (``grad_mode``: ``--weighting-grads`` of a
    gradient method): the second step of the run (the first creates the optimizer's state).
    ``compiling``: the model's forward as ``torch.compile`` traces it (see :func:`_as_compiled`; the
    compile scenarios of a fused model). ``sync_bn``: the model as DDP on CUDA builds it
    (:func:`fastmtl.step.build_train_model` with ``sync_bn``: SyncBatchNorms, so no fused
    BatchNorm + ReLU), traced as one process would run it (no process group: no collectives)."""
    cfg = _model_config(model, channels_last, fused, weighting, grad_mode)
    cuda = torch.device("cuda", 0)
    build_train_model = step_module.build_train_model
    patched = [(torch.cuda, "is_available", lambda: True), (torch.cuda, "is_bf16_supported", lambda *a, **k: True),
               (foreach_utils, "_get_foreach_kernels_supported_devices", lambda: [*FOREACH_DEVICES, "meta"])]
    if sync_bn:
        patched.append((step_module, "build_train_model", lambda c, desc, sync_bn: build_train_model(c, desc, True)))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patched]
    try:
        for obj, name, value in patched:
            setattr(obj, name, value)
        with fake_cuda(arch) as harness:
            info = synthetic_info(cfg.tasks, NUM_CLASSES)
            torch.manual_seed(0)
            parts = build_step(cfg, info, Runtime(cuda, amp_dtype=torch.bfloat16), 1_000_000, 100)
            rgb, targets = random_batch(cfg.tasks, info, batch, size, "cpu", 0)  # then moved: fake device tensors
            rgb, targets = rgb.to(cuda), {k: v.to(cuda) for k, v in targets.items()}
            rgb = rgb.contiguous(memory_format=parts.step.memory_format)
            namer = GroupNamer(parts.model)
            tracer = _Tracer(harness, namer)
            with contextlib.ExitStack() as stack:
                stack.enter_context(namer.hooks(tracer, parts.loss_fn, parts.optimizer))
                if compiling:
                    stack.enter_context(_as_compiled(parts.model))
                rules = stack.enter_context(_AutocastRules(namer))
                stack.enter_context(tracer)
                ready = stack.enter_context(_gradient_hooks(parts.model, tracer))
                parts.step.run(rgb, targets)  # the first step creates the optimizer's state: not a typical step
                tracer.trace, tracer.phase = StepTrace(), "forward"
                rules.weight_cache.clear()  # autocast's cache lives for one autocast region
                ready.clear()
                parts.step.run(rgb, targets)
            tracer.trace.grads = _grad_records(parts.model, ready)
            tracer.trace.buffers = [(_dtype_name(b), b.numel() * b.element_size()) for b in parts.model.buffers()]
            tracer.trace.tasks = tuple(cfg.tasks)
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)
    return tracer.trace


