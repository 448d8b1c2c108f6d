"""A fake CUDA device: run fastmtl's real launchers without a GPU and record what they launch.

Inside :func:`fake_cuda` tensors are **meta** tensors (shapes, strides and dtypes, no data) that
*claim* to be CUDA to Python code: ``t.is_cuda`` is True and ``t.device`` is ``cuda:0``, except
while an aten kernel itself runs (meta kernels keep seeing ``meta``). Factory calls with a CUDA
device create meta tensors. So the launchers in ``fastmtl.kernels`` take their CUDA branches
(block sizes, ``tl.dot``, SM-count-based splits) exactly as on a GPU, and autograd works (it
runs on the meta device). Nothing executes: every Triton launch is intercepted before compiling.

All the patching is here, undone on exit (one fake device at a time, one thread):

* ``torch.Tensor.is_cuda`` / ``torch.Tensor.device``: the claim above (class-level properties);
* ``torch.cuda._lazy_init`` (a no-op: nothing to initialise), ``torch.cuda.current_device`` (0),
  ``torch.cuda.device`` (a no-op context), ``torch.cuda.get_device_properties`` (an object with
  the target's ``multi_processor_count`` and ``name``); ``functools`` caches in the
  ``fastmtl.kernels`` modules (e.g. a cached SM count) are cleared on entry and exit;
* ``torch.cuda.get_device_capability`` (the target's, e.g. ``(9, 0)``: launch choices may depend on it);
* ``FASTMTL_KERNELS=auto`` (so the ops pick their Triton path for "CUDA" tensors) and
  ``FASTMTL_SELFCHECK=0`` (the first-call self-check would run the kernels);
* ``JITFunction.run`` and, under ``TRITON_INTERPRET=1``, ``InterpretedFunction.run``: replaced by a
  recorder that binds the arguments with **Triton's own binder** for the target's backend
  (``create_function_from_signature`` + ``JITFunction._pack_args``: signature dtypes,
  16-divisibility of pointers and ints, ints equal to 1, constexprs, ``num_warps``/``num_stages``)
  and returns without compiling or running. Pointer alignment assumes the caching allocator's
  (every allocation at least 512-byte aligned): a tensor's address is ``base + storage_offset * itemsize``.
* a ``TorchDispatchMode`` records every aten op (inputs, outputs, and whether it is a view, an
  allocation or a metadata query) in launch order with the Triton launches; calls of the
  ``fastmtl::*`` custom ops run their real Python implementation under the recorder (their
  fake/meta kernel would otherwise answer for meta tensors), so nested ops are recorded too.

Use :func:`capture` to run a function under the fake device and get the :class:`Timeline`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Tuple, Union

import torch
from torch._prims_common import suggest_memory_format
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import fastmtl.kernels as kernels
from fastmtl.perf.aot.archs import ARCHS, Arch

_BASE_ADDRESS = 1 << 32  # of every fake allocation (512-byte aligned like the caching allocator's blocks)
ALLOC_OPS = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided"}
"""aten ops that only allocate (no kernel, no bytes)."""
FREE_OPS = {"_unsafe_view", "detach", "lift_fresh", "alias", "_reshape_alias", "scalar_tensor"}
"""aten ops without a kernel beyond those whose schema says view: aliases, and ``scalar_tensor`` (a
Python scalar wrapped as a 0-d tensor; CUDA kernels take it as a CPU scalar)."""


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class TensorInfo:
    """A tensor as a kernel sees it. ``storage`` identifies its buffer within one timeline."""

    shape: Tuple[int, ...]
    stride: Tuple[int, ...]
    dtype: str
    itemsize: int
    offset: int
    storage: int

    @property
    def nbytes(self) -> int:
        """Bytes of the elements it addresses (``numel * itemsize``; no tensor here overlaps itself)."""
        n = 1
        for s in self.shape:
            n *= s
        return n * self.itemsize

    @property
    def extent(self) -> Tuple[int, int, int, Tuple[int, ...], Tuple[int, ...]]:
        """What makes two arguments the same tensor: buffer, offset, dtype size, shape, strides."""
        return (self.storage, self.offset, self.itemsize, self.shape, self.stride)


@dataclass
class Launch:
    """One Triton launch, specialised as Triton would for the target (nothing compiled)."""

    kernel: str  # "module:qualname", resolvable in a fresh process
    name: str
    signature: Dict[str, str]  # param -> Triton type ("*bf16", "i32", "constexpr", ...)
    constexprs: Dict[str, Any]  # param -> value (JSON-able; tl dtypes as "tl.float32")
    attrs: Dict[str, List]  # param -> Triton attributes (e.g. [["tt.divisibility", 16]])
    options: Dict[str, Any]  # launch options given (num_warps, num_stages, ...)
    grid: Tuple[int, int, int]
    tensors: Dict[str, TensorInfo]  # pointer param -> tensor
    declared: List[str]  # params declared tl.constexpr (the others in constexprs were specialised, e.g. == 1)
    scalars: Dict[str, Any]  # the non-tensor arguments as passed (constexprs encoded as in constexprs)
    source_hash: str  # kernel source and the sources of the @jit helpers it calls

    @property
    def programs(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def spec(self) -> Dict[str, Any]:
        """Everything the compiler needs (JSON-able); equal specs compile to the same binary."""
        return {"kernel": self.kernel, "signature": self.signature, "constexprs": self.constexprs,
                "attrs": self.attrs, "options": self.options, "source_hash": self.source_hash}

    @property
    def spec_key(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:20]

    def config(self) -> str:
        """A short readable name of the specialisation: pointer dtypes, declared constexprs, the
        int parameters Triton specialised to 1 (unit strides: the layout), launch options."""
        ptrs = ",".join(t[1:] for t in self.signature.values() if t.startswith("*"))
        ce = " ".join(f"{k}={v}" for k, v in self.constexprs.items() if k in self.declared)
        ones = ",".join(k for k in self.constexprs if k not in self.declared)
        opts = " ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"[{ptrs}] {ce}{f' ==1:{ones}' if ones else ''} {opts}".strip()


@dataclass
class TorchOp:
    """One aten op between (or inside) the launchers. ``kind``: ``compute`` (a kernel),
    ``view`` / ``alloc`` (no kernel, no bytes) or ``meta`` (no tensor result: a query)."""

    name: str
    kind: str
    inputs: List[TensorInfo]
    outputs: List[TensorInfo]
    written_only: List[int] = field(default_factory=list)  # input positions that are written, not read


Event = Union[Launch, TorchOp]


@dataclass
class Timeline:
    """What a captured call did, in order."""

    events: List[Event] = field(default_factory=list)

    @property
    def launches(self) -> List[Launch]:
        return [e for e in self.events if isinstance(e, Launch)]

    @property
    def torch_ops(self) -> List[TorchOp]:
        return [e for e in self.events if isinstance(e, TorchOp) and e.kind == "compute"]


# --------------------------------------------------------------------------- the fake device
class _State(threading.local):
    """Per thread: how deep inside aten kernels (where tensors show their real device)."""

    def __init__(self):
        self.inside_aten = 0


_STATE = _State()
_ACTIVE: List["_Harness"] = []  # the active harness (autograd may run the backward on another thread)
_REAL_DEVICE = torch._C.TensorBase.device
_REAL_IS_CUDA = torch._C.TensorBase.is_cuda


def _claims_cuda(t: torch.Tensor) -> bool:
    return _STATE.inside_aten == 0 and _REAL_DEVICE.__get__(t).type == "meta"


def _device(self):
    return torch.device("cuda", 0) if _claims_cuda(self) else _REAL_DEVICE.__get__(self)


def _is_cuda(self):
    return _claims_cuda(self) or _REAL_IS_CUDA.__get__(self)


class _DeviceProperties:
    """What ``torch.cuda.get_device_properties`` returns on the fake device."""

    def __init__(self, arch: Arch):
        self.name = f"fake {arch.gpu} ({arch.name})"
        self.multi_processor_count = arch.sms
        self.major, self.minor = divmod(arch.cc, 10)
        self.total_memory = 80 << 30
        self.L2_cache_size = 50 << 20


class _NoDevice:
    """``torch.cuda.device(...)`` on the fake device: nothing to switch."""

    def __init__(self, device=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _kernel_caches() -> List[Any]:
    found = []
    for name, mod in list(sys.modules.items()):
        if mod is not None and (name == kernels.__name__ or name.startswith(kernels.__name__ + ".")):
            found += [v for v in vars(mod).values() if hasattr(v, "cache_clear") and callable(v.cache_clear)]
    return found


CUDNN_CONVS = (torch.ops.aten.convolution, torch.ops.aten.convolution_backward)


def _cudnn_channels_last(func, args) -> bool:
    """CUDA's memory-format rule for a convolution (ATen's ``cudnn_conv_suggest_memory_format``):
    channels_last when its 2-d input or weight is channels_last. Meta kernels answer NCHW for
    any input, so without this rule the fake device would drop channels_last after the first conv."""
    x, weight = (args[1], args[2]) if func.overloadpacket is torch.ops.aten.convolution_backward else args[:2]
    if weight.dim() != 4 or torch.float64 in (x.dtype, weight.dtype):
        return False
    return torch.channels_last in (suggest_memory_format(x), suggest_memory_format(weight))


def _as_channels_last(out):
    """``out`` (a tensor or a tuple of optional tensors) with its 4-d tensors in channels_last."""
    if isinstance(out, torch.Tensor):
        return out.contiguous(memory_format=torch.channels_last) if out.dim() == 4 else out
    return type(out)(_as_channels_last(t) if isinstance(t, torch.Tensor) else t for t in out)


def _to_meta(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    device = kwargs.get("device")
    if device is not None and torch.device(device).type == "cuda":
        kwargs = dict(kwargs, device=torch.device("meta"))
        if "generator" in kwargs:
            kwargs["generator"] = None  # a CPU generator does not drive meta tensors
    return kwargs


class _Recorder(TorchDispatchMode):
    """Records every aten op; runs ``fastmtl::*`` ops' real implementations."""

    def __init__(self, harness: "_Harness"):
        super().__init__()
        self.harness = harness

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = _to_meta(dict(kwargs or {}))
        if func.namespace == "fastmtl":
            from torch._library.custom_ops import OPDEFS

            with self:  # the mode is popped while its handler runs; nested ops must be seen too
                return OPDEFS[func._schema.name]._init_fn(*args, **kwargs)
        _STATE.inside_aten += 1
        try:
            out = func(*args, **kwargs)
        finally:
            _STATE.inside_aten -= 1
        if self.harness.channels_last_inputs and func.__name__.split(".")[0] in ("randn", "rand") and out.dim() == 4:
            out = out.contiguous(memory_format=torch.channels_last)
        if func.overloadpacket in CUDNN_CONVS and _cudnn_channels_last(func, args):
            out = _as_channels_last(out)
        self.harness.record_op(func, args, kwargs, out)
        return out


def source_hash(fn: Callable) -> str:
    """Hash of a kernel's source and of every ``@triton.jit`` helper it calls (recursively),
    and of the plain values of the globals it reads."""
    seen: Dict[str, str] = {}

    def visit(f):
        py = getattr(f, "fn", f)
        key = f"{py.__module__}:{py.__qualname__}"
        if key in seen:
            return
        seen[key] = inspect.getsource(py)
        for name in py.__code__.co_names:
            val = py.__globals__.get(name)
            if hasattr(val, "fn") and callable(getattr(val, "fn")) and hasattr(val.fn, "__code__"):
                visit(val)
            elif isinstance(val, (int, float, str, bool)):
                seen[f"{key}.{name}"] = repr(val)

    visit(fn)
    return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()[:20]


def _encode(value: Any) -> Any:
    """A constexpr value as JSON (tl dtypes as ``"tl.<name>"``)."""
    import triton.language as tl

    if isinstance(value, tl.dtype):
        return f"tl.{value.name}"
    if isinstance(value, tl.constexpr):
        return _encode(value.value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    raise TypeError(f"fake_cuda: cannot record constexpr {value!r} of type {type(value).__name__}")


class _PointerArg:
    """What Triton's binder sees of a tensor argument: its dtype and an aligned fake address."""

    def __init__(self, t: torch.Tensor):
        self.dtype = t.dtype
        self._ptr = _BASE_ADDRESS + t.storage_offset() * t.element_size()

    def data_ptr(self) -> int:
        return self._ptr


class _Harness:
    def __init__(self, arch: Arch, channels_last_inputs: bool = False):
        from triton.backends.compiler import GPUTarget
        from triton.compiler import make_backend

        os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, said explicitly (no warning)
        self.arch = arch
        self.backend = make_backend(GPUTarget("cuda", arch.cc, 32))
        self.timeline = Timeline()
        self.channels_last_inputs = channels_last_inputs
        self._binders: Dict[int, Tuple[Any, Callable]] = {}
        self._storages: Dict[int, int] = {}
        self._hashes: Dict[int, str] = {}

    # ---- tensors
    def info(self, t: torch.Tensor) -> TensorInfo:
        key = t.untyped_storage()._cdata
        sid = self._storages.setdefault(key, len(self._storages))
        return TensorInfo(tuple(t.shape), tuple(t.stride()), str(t.dtype).replace("torch.", ""), t.element_size(),
                          t.storage_offset(), sid)

    # ---- aten ops
    def record_op(self, func, args, kwargs, out) -> None:
        base = func.__name__.split(".")[0]
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        schema = func._schema
        if not outs:
            kind = "meta"
        elif base in ALLOC_OPS:
            kind = "alloc"
        elif base in FREE_OPS or getattr(func, "is_view", False):
            kind = "view"
        else:
            kind = "compute"
        inputs, written_only = [], []
        flat_args = list(args) + [kwargs.get(a.name) for a in schema.arguments[len(args):]]
        for a, v in zip(schema.arguments, flat_args):
            for t in tree_flatten(v)[0]:
                if isinstance(t, torch.Tensor):
                    if a.alias_info is not None and a.alias_info.is_write and (a.name == "out" or base in ("copy_", "fill_", "zero_")):
                        written_only.append(len(inputs))
                    inputs.append(self.info(t))
        self.timeline.events.append(TorchOp(str(func.__name__), kind, inputs, [self.info(o) for o in outs], written_only))

    # ---- Triton launches
    def _binder(self, fn) -> Tuple[Any, Callable]:
        from triton.runtime.jit import JITFunction, create_function_from_signature

        if id(fn) not in self._binders:
            jit = fn if isinstance(fn, JITFunction) else JITFunction(fn.fn)  # an InterpretedFunction: bind only
            self._binders[id(fn)] = (jit, create_function_from_signature(jit.signature, jit.params, self.backend))
        return self._binders[id(fn)]

    def record_launch(self, fn, args, grid, kwargs) -> None:
        jit, binder = self._binder(fn)
        as_ptr = lambda v: _PointerArg(v) if isinstance(v, torch.Tensor) else v  # noqa: E731
        bound, specialization, opts = binder(*map(as_ptr, args), **{k: as_ptr(v) for k, v in kwargs.items()})
        options, signature, constexprs, attrs = jit._pack_args(self.backend, opts, bound, specialization, opts)
        names = list(signature)
        real = dict(zip(names, list(args) + [None] * (len(names) - len(args))))
        real.update({k: v for k, v in kwargs.items() if k in signature})
        if callable(grid):
            grid = grid(bound)
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        py = getattr(fn, "fn", None) or jit.fn
        if id(py) not in self._hashes:
            self._hashes[id(py)] = source_hash(fn)
        self.timeline.events.append(Launch(
            kernel=f"{py.__module__}:{py.__qualname__}", name=py.__name__,
            signature=dict(signature),
            constexprs={names[p[0]]: _encode(v) for p, v in constexprs.items()},
            attrs={names[p[0]]: v for p, v in attrs.items() if v},
            options={k: v for k, v in opts.items() if k not in signature},
            grid=grid, tensors={k: self.info(v) for k, v in real.items() if isinstance(v, torch.Tensor)},
            declared=[p.name for p in jit.params if p.is_constexpr],
            scalars={k: _encode(v) for k, v in real.items() if not isinstance(v, torch.Tensor)},
            source_hash=self._hashes[id(py)],
        ))


def _capture_run(self, *args, grid, warmup=False, **kwargs):
    if not _ACTIVE:
        raise RuntimeError("fastmtl.perf.aot: a Triton launch on the fake CUDA device outside fake_cuda()")
    if not warmup:
        _ACTIVE[0].record_launch(self, args, grid, kwargs)
    return None


@contextlib.contextmanager
def fake_cuda(arch: Union[int, Arch] = 90, channels_last_inputs: bool = False) -> Iterator[_Harness]:
    """The fake CUDA device of ``arch`` (compute capability or :class:`Arch`); yields the harness
    whose ``timeline`` collects the launches and ops. ``channels_last_inputs``: 4-d tensors made
    by ``torch.randn`` / ``torch.rand`` come out channels_last (inputs built as a channels_last
    model would hold them, views of them included)."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    if _ACTIVE:
        raise RuntimeError("fastmtl.perf.aot: fake_cuda() is already active")
    arch = ARCHS[arch] if isinstance(arch, int) else arch
    harness = _Harness(arch, channels_last_inputs)
    props = _DeviceProperties(arch)
    patches = [
        (torch.Tensor, "device", property(_device)),
        (torch.Tensor, "is_cuda", property(_is_cuda)),
        (torch.cuda, "_lazy_init", lambda: None),
        (torch.cuda, "current_device", lambda: 0),
        (torch.cuda, "device", _NoDevice),
        (torch.cuda, "get_device_properties", lambda *a, **k: props),
        (torch.cuda, "get_device_capability", lambda *a, **k: divmod(arch.cc, 10)),
        (JITFunction, "run", _capture_run),
        (InterpretedFunction, "run", _capture_run),
    ]
    saved = [(obj, name, obj.__dict__.get(name, _MISSING)) for obj, name, _ in patches]
    env = {name: os.environ.get(name) for name in _ENV}
    caches = _kernel_caches()
    for c in caches:
        c.cache_clear()
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        os.environ.update(_ENV)
        _ACTIVE.append(harness)
        with _Recorder(harness):
            yield harness
    finally:
        _ACTIVE.clear()
        for obj, name, value in saved:
            if value is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, value)
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for c in caches:
            c.cache_clear()


_MISSING = object()
_ENV = {"FASTMTL_KERNELS": "auto", "FASTMTL_SELFCHECK": "0"}
"""Environment while capturing: the ops' Triton path for "CUDA" tensors, no first-call self-check
(it would run the kernels; the capture only records their launches)."""


def capture(fn: Callable[[], Any], arch: Union[int, Arch] = 90, channels_last_inputs: bool = False) -> Timeline:
    """Run ``fn()`` on the fake CUDA device of ``arch``; the :class:`Timeline` of what it did."""
    with fake_cuda(arch, channels_last_inputs) as h:
        fn()
    return h.timeline


@functools.lru_cache(maxsize=None)
def triton_version() -> str:
    import triton

    return triton.__version__
