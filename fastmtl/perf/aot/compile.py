"""Compile one captured launch specialisation for one NVIDIA target, without a GPU, and read the result.

:func:`compile_spec` (run in a worker process with ``TRITON_INTERPRET=0``) gives, per spec and
target: compiled or the compiler's error; registers (``cuobjdump --dump-resource-usage`` of the
cubin), spill stores/loads and stack (``ptxas -v`` of Triton's PTX, the same ptxas for every
target: ``ptxas-blackwell`` from the triton wheel), local memory, shared memory (Triton's
metadata), warps/stages, the SASS global loads by width (static instruction counts: a loop body
counts once), TMA / tensor-core instructions, and the pointer parameters the kernel uses at all
(from the TTIR: a parameter with no use after dead-code elimination is never read or written).

:func:`compile_all` compiles many specs through an on-disk cache (one JSON per spec and target,
keyed by the spec — which holds the hash of the kernel source and its ``@jit`` helpers — the
target and the triton version) and a process pool for the misses.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from fastmtl.paths import aot_cache_dir
from fastmtl.perf.aot.archs import ARCHS

RESULT_VERSION = 3  # bump when the result's fields change (invalidates the cache)
LOAD_WIDTH = {"128": 16, "256": 32, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}
"""Bytes per thread of a global load by its SASS width modifier (no modifier: 32-bit, 4 bytes)."""


def cache_dir() -> Path:
    """Where compile results are kept (:func:`fastmtl.paths.aot_cache_dir`)."""
    return aot_cache_dir()


def nvidia_tool(name: str) -> str:
    """Path of an NVIDIA tool shipped in the triton wheel (``ptxas-blackwell``, ``cuobjdump``)."""
    import triton.backends.nvidia as nv

    path = os.path.join(os.path.dirname(nv.__file__), "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not in this triton wheel (needed by fastmtl gate)")
    return path


# --------------------------------------------------------------------------- reading the outputs
def used_params(ttir: str, params: Iterable[str]) -> List[str]:
    """The runtime parameters ``params`` (in order; constexprs excluded) that the body of the TTIR
    kernel function references. The function's arguments are matched to ``params`` by position:
    Triton names an argument after the variable it flows into (``d_ptr``, ``d_ptr_0`` for
    ``d_ptr = d0_ptr if ... else d1_ptr``), not always after the parameter."""
    lines = ttir.splitlines()
    start = next(i for i, line in enumerate(lines) if "tt.func" in line)
    ssa = re.findall(r"%([\w.$-]+): ", lines[start])
    params = list(params)
    if len(ssa) != len(params):
        raise ValueError(f"TTIR kernel has {len(ssa)} arguments, expected {len(params)}: {params}")
    body = "\n".join(lines[start + 1:])
    return [p for p, name in zip(params, ssa) if re.search(rf"%{re.escape(name)}(?![\w])", body)]


def parse_ptxas(log: str) -> Dict[str, int]:
    """Registers, spill bytes and stack from ``ptxas -v``."""
    def grab(pattern):
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0

    return {"ptxas_registers": grab(r"Used (\d+) registers"), "spill_stores": grab(r"(\d+) bytes spill stores"),
            "spill_loads": grab(r"(\d+) bytes spill loads"), "stack": grab(r"(\d+) bytes stack frame")}


def parse_resource_usage(text: str) -> Dict[str, int]:
    """``reg``, ``static_shared``, ``local``, ``cubin_stack`` from ``cuobjdump --dump-resource-usage``
    (Triton's shared memory is dynamic: it is in the metadata, not here)."""
    out = {}
    for key, name in (("REG", "reg"), ("SHARED", "static_shared"), ("LOCAL", "local"), ("STACK", "cubin_stack")):
        m = re.search(rf"\b{key}:(\d+)", text)
        out[name] = int(m.group(1)) if m else 0
    return out


def _opcode(line: str) -> Optional[str]:
    m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
    return m.group(1) if m else None


def parse_sass(sass: str) -> Dict[str, object]:
    """Global loads/stores by width and special instructions in ``cuobjdump -sass`` output.

    ``loads``: ``{width_bytes: count}`` over ``LDG`` and ``LDGSTS`` (cp.async) instructions;
    ``load_bytes_128`` / ``load_bytes``: per-thread bytes of 128-bit-or-wider loads / of all, each
    instruction once. ``tma``: ``UTMALDG``/``UBLKCP`` count; ``mma``: tensor-core instructions by
    opcode (``HMMA`` sm_80, ``HGMMA`` = wgmma sm_90, ``UTC*MMA`` = tcgen05 sm_100)."""
    loads: Dict[int, int] = {}
    stores: Dict[int, int] = {}
    tma, mma = 0, {}
    for line in sass.splitlines():
        op = _opcode(line)
        if op is None:
            continue
        parts = op.split(".")
        if parts[0] in ("LDG", "LDGSTS", "STG"):
            width = next((LOAD_WIDTH[p] for p in parts[1:] if p in LOAD_WIDTH), 4)
            table = stores if parts[0] == "STG" else loads
            table[width] = table.get(width, 0) + 1
        elif parts[0] in ("UTMALDG", "UBLKCP"):
            tma += 1
        elif parts[0] in ("HMMA", "HGMMA", "IMMA") or (parts[0].startswith("UTC") and parts[0].endswith("MMA")):
            mma[parts[0]] = mma.get(parts[0], 0) + 1
    total = sum(w * n for w, n in loads.items())
    wide = sum(w * n for w, n in loads.items() if w >= 16)
    return {"loads": {str(k): v for k, v in sorted(loads.items())}, "stores": {str(k): v for k, v in sorted(stores.items())},
            "load_bytes": total, "load_bytes_128": wide, "tma": tma, "mma": mma}


# --------------------------------------------------------------------------- the worker
def _decode_constexpr(value):
    import triton.language as tl

    if isinstance(value, str) and value.startswith("tl."):
        return tl.dtype(value[3:])
    if isinstance(value, list):  # a tuple constexpr (JSON keeps it as a list)
        return tuple(_decode_constexpr(v) for v in value)
    return value


def _error_text(e: BaseException) -> str:
    """One line per exception of the chain (Triton nests the real message in the cause): its
    type, its first line ("at L:C:") and its last line (the message)."""
    parts = []
    while e is not None and len(parts) < 4:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
        parts.append(f"{type(e).__name__}: {lines[0]}" + (f" ... {lines[-1]}" if len(lines) > 1 else ""))
        e = e.__cause__ or e.__context__
    return " <- ".join(parts)[:1500]


def compile_spec(spec: Dict, cc: int) -> Dict:
    """Compile ``spec`` (a :meth:`~.harness.Launch.spec`) for compute capability ``cc``; a JSON-able
    result (``ok`` False with ``error`` when the compiler fails). Needs ``TRITON_INTERPRET=0``."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    module, qualname = spec["kernel"].split(":")
    fn = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    names = list(spec["signature"])
    constexprs = {(names.index(k),): _decode_constexpr(v) for k, v in spec["constexprs"].items()}
    attrs = {(names.index(k),): v for k, v in spec["attrs"].items()}
    target = GPUTarget("cuda", cc, 32)
    options = make_backend(target).parse_options(dict(spec["options"]))
    result = {"version": RESULT_VERSION, "cc": cc, "num_warps": options.num_warps, "num_stages": options.num_stages}
    try:
        kernel = triton.compile(ASTSource(fn, spec["signature"], constexprs, attrs), target=target,
                                options=options.__dict__)
    except Exception as e:  # the compiler's error is the result
        return dict(result, ok=False, error=_error_text(e))
    result.update(ok=True, shared=int(kernel.metadata.shared),  # bytes of dynamic shared memory per program
                  used_params=used_params(kernel.asm["ttir"], [k for k, t in spec["signature"].items() if t != "constexpr"]))
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        Path(ptx).write_text(kernel.asm["ptx"])
        Path(cubin).write_bytes(kernel.asm["cubin"])
        arch = ARCHS[cc].ptxas_arch
        log = subprocess.run([nvidia_tool("ptxas-blackwell"), f"-arch={arch}", "-v", ptx, "-o", os.devnull],
                             capture_output=True, text=True)
        result.update(parse_ptxas(log.stdout + log.stderr))
        usage = subprocess.run([nvidia_tool("cuobjdump"), "--dump-resource-usage", cubin], capture_output=True, text=True)
        result.update(parse_resource_usage(usage.stdout))
        sass = subprocess.run([nvidia_tool("cuobjdump"), "-sass", cubin], capture_output=True, text=True)
        result.update(parse_sass(sass.stdout))
    return result


def _worker_init(triton_cache: str) -> None:
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, said explicitly (no warning)
    os.environ["TRITON_CACHE_DIR"] = triton_cache


def _worker(job: Tuple[Dict, int]) -> Dict:
    try:
        return compile_spec(*job)
    except Exception as e:  # a broken spec or tool: reported as that spec's error, the others go on
        return {"version": RESULT_VERSION, "cc": job[1], "ok": False, "error": f"{type(e).__name__}: {e}"[:1500]}


# --------------------------------------------------------------------------- many, cached
def result_key(spec: Dict, cc: int) -> str:
    import triton

    blob = json.dumps({"spec": spec, "cc": cc, "triton": triton.__version__, "v": RESULT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def compile_all(jobs: List[Tuple[Dict, int]], workers: int = 2, use_cache: bool = True,
                directory: Optional[Path] = None, progress: bool = False) -> Tuple[List[Dict], Dict[str, int]]:
    """Results of ``compile_spec(spec, cc)`` for each job, in order, and ``{"cached": n, "compiled": m}``.

    Misses compile in a pool of ``workers`` fresh processes (spawned with ``TRITON_INTERPRET=0``
    so the kernels are real ``JITFunction``s even when this process runs the interpreter)."""
    directory = Path(directory or cache_dir())
    results: List[Optional[Dict]] = [None] * len(jobs)
    todo: Dict[str, List[int]] = {}
    for i, (spec, cc) in enumerate(jobs):
        key = result_key(spec, cc)
        path = directory / f"{key}.json"
        if use_cache and path.is_file():
            try:
                results[i] = json.loads(path.read_text())
                continue
            except (OSError, ValueError):
                pass
        todo.setdefault(key, []).append(i)
    if todo:
        directory.mkdir(parents=True, exist_ok=True)
        saved_env = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "0"  # the spawned workers inherit it before importing triton
        try:
            with concurrent.futures.ProcessPoolExecutor(
                    max_workers=max(1, min(workers, len(todo))), mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_init, initargs=(str(directory / "triton"),)) as pool:
                futures = {pool.submit(_worker, jobs[idx[0]]): key for key, idx in todo.items()}
                for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                    key, out = futures[future], future.result()
                    tmp = directory / f".{key}.{os.getpid()}.tmp"  # written as each finishes: an interrupted run keeps them
                    tmp.write_text(json.dumps(out))
                    os.replace(tmp, directory / f"{key}.json")
                    for i in todo[key]:
                        results[i] = out
                    if progress:
                        print(f"\rcompiling {done}/{len(futures)}", end="", file=sys.stderr, flush=True)
            if progress:
                print(file=sys.stderr)
        finally:
            if saved_env is None:
                os.environ.pop("TRITON_INTERPRET", None)
            else:
                os.environ["TRITON_INTERPRET"] = saved_env
    return results, {"cached": len(jobs) - sum(len(v) for v in todo.values()), "compiled": len(todo)}  # type: ignore
