"""The compile gate: every Triton launch of the fused ops, captured from the real launchers on the
fake CUDA device, compiles for sm_80, sm_90 and sm_100 without spilling.

The full gate is cached on disk (``$FASTMTL_CACHE``/aot): cold it takes about 5 minutes on 2 busy
cores, warm a few seconds."""
import inspect
import json

import pytest
import torch

from fastmtl.perf.aot import archs, cases, compile as aot_compile, gate, harness
from fastmtl.kernels import aspp, bn_relu, se_scale, sigmoid_gate, silog


@pytest.fixture(scope="module")
def gate_report():
    return gate.run_gate(archs=tuple(archs.ARCHS), dtypes=("bf16", "fp32"))


def test_gate_compiles_every_specialisation_for_every_target_without_spills(gate_report):
    bad = [(r["arch"], r["kernel"], r["config"], r.get("error") or f"{r['spill_stores']}+{r['spill_loads']} B spilled")
           for r in gate_report["rows"] if not r["ok"] or r["spill_stores"] + r["spill_loads"]]
    assert not bad, bad
    assert gate_report["ok"]
    assert {r["arch"] for r in gate_report["rows"]} == {"sm_80", "sm_90", "sm_100"}
    for r in gate_report["rows"]:
        assert 0 < r["registers"] <= 255
        assert 0 < r["occupancy"] <= 1
        assert r["programs_min"] >= 1
        assert r["load_share_128"] is None or 0 <= r["load_share_128"] <= 1


def _jit_kernels():
    """Every @triton.jit function of fastmtl.kernels that no other one calls: the kernels."""
    found = {}
    for mod in (aspp.kernels, bn_relu.kernels, se_scale.kernels, sigmoid_gate.kernels, silog.kernels):
        for name, v in vars(mod).items():
            if hasattr(v, "fn") and inspect.isfunction(v.fn) and v.fn.__module__ == mod.__name__:
                found[name] = v.fn
    called = {n for fn in found.values() for n in fn.__code__.co_names}
    return {n for n in found if n not in called}


def test_gate_covers_every_kernel_on_every_target(gate_report):
    kernels = _jit_kernels()
    assert len(kernels) >= 8
    for arch in ("sm_80", "sm_90", "sm_100"):
        assert {r["kernel"] for r in gate_report["rows"] if r["arch"] == arch} == kernels


def test_gate_covers_both_dtypes_layouts_and_variants(gate_report):
    used = {u["case"] for r in gate_report["rows"] for u in r["uses"]}
    assert used == {c.name for c in cases.all_cases("full")}  # every case launched something, on every pass
    passes = {(u["case"], u["pass_"]) for r in gate_report["rows"] for u in r["uses"]}
    assert len(passes) == 2 * len(used)


def test_gate_warm_rerun_compiles_nothing(gate_report):
    again = gate.run_gate(archs=(90,), ops=["sigmoid_gate"], dtypes=("bf16",))
    assert again["cache"]["compiled"] == 0 and again["cache"]["cached"] > 0


def test_compile_error_is_reported_not_raised(tmp_path):
    launch = harness.capture(lambda: None).launches  # nothing launched
    assert launch == []
    spec = _first_launch("sigmoid_gate").spec()
    spec["constexprs"]["BLOCK_HW"] = 3  # not a power of two: tl.arange refuses it
    (res,), counts = aot_compile.compile_all([(spec, 90)], directory=tmp_path)
    assert counts == {"cached": 0, "compiled": 1}
    assert res["ok"] is False and "arange" in res["error"].lower()


def _first_launch(op):
    case = cases.all_cases("tiny", [op], ["fp32"], ["nchw"], variants=False)[0]
    return cases.run_case(case, "fused")["forward"].launches[0]


# --------------------------------------------------------------------------- the capture is Triton's own
class _FakeDriver:
    """Just what ``JITFunction.run`` asks the active driver before compiling."""

    def __init__(self, target):
        self.target = target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 0

    def get_current_target(self):
        return self.target


def _real_tensor(info: harness.TensorInfo) -> torch.Tensor:
    """A CPU tensor with the same shape, strides, dtype and 16-byte alignment as a captured argument."""
    dtype = getattr(torch, info.dtype)
    span = 1 + sum((s - 1) * st for s, st in zip(info.shape, info.stride))
    base = torch.empty(span + info.offset + 64, dtype=dtype)
    skip = (-base.data_ptr() % 64) // info.itemsize  # 64-byte aligned start, like the fake allocator
    return base[skip:].as_strided(info.shape, info.stride, info.offset)


@pytest.mark.parametrize("op", ["se_scale", "aspp", "silog"])
def test_captured_specialisation_is_what_tritons_jit_computes(op, monkeypatch):
    """Replay a captured launch through Triton's real ``JITFunction.run`` (with a driver that only
    answers device/stream/target, and a ``jit_cache_hook`` that stops before compiling): the
    signature, constexprs and attributes Triton computes equal the captured ones."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    case = cases.all_cases("tiny", [op], ["bf16"], ["channels_last"], variants=False)[0]
    launches = cases.run_case(case, "fused")["backward"].launches
    assert launches
    monkeypatch.setattr(driver, "_active", _FakeDriver(GPUTarget("cuda", 90, 32)))
    seen = []
    monkeypatch.setattr(triton.knobs.runtime, "jit_cache_hook", lambda **kw: seen.append(kw["compile"]) or True)
    for launch in launches:
        module, qualname = launch.kernel.split(":")
        jit = JITFunction(getattr(__import__(module, fromlist=[qualname]), qualname).fn)
        decode = lambda v: tl.dtype(v[3:]) if isinstance(v, str) and v.startswith("tl.") else v  # noqa: E731
        args = {k: decode(v) for k, v in launch.scalars.items()}
        args.update({k: _real_tensor(t) for k, t in launch.tensors.items()})
        ordered = [args[p.name] for p in jit.params if not p.is_constexpr]
        consts = {p.name: args[p.name] for p in jit.params if p.is_constexpr}
        jit.run(*ordered, grid=launch.grid, warmup=False, **consts, **launch.options)
        got = seen[-1]
        names = list(got["signature"])
        assert got["signature"] == launch.signature
        assert {names[k[0]]: harness._encode(v) for k, v in got["constants"].items()} == launch.constexprs
        assert {names[k[0]]: v for k, v in got["configs"][0].items() if v} == launch.attrs
        assert got["num_warps"] == launch.options.get("num_warps", 4)
    assert len(seen) == len(launches)


# --------------------------------------------------------------------------- pieces
def test_fake_cuda_claims_cuda_and_restores_everything():
    props = torch.cuda.get_device_properties
    with harness.fake_cuda(80) as h:
        t = torch.empty(3, 4, device="cuda")
        assert t.is_cuda and t.device == torch.device("cuda", 0)
        assert torch.cuda.get_device_properties(0).multi_processor_count == 108
        u = (t * 2).sum(0)  # autograd-free meta math works
        assert tuple(u.shape) == (4,)
    assert torch.cuda.get_device_properties is props
    assert not torch.empty(1).is_cuda and "device" not in vars(torch.Tensor)
    assert [o.name for o in h.timeline.torch_ops] == ["mul.Tensor", "sum.dim_IntList"]


@pytest.mark.parametrize("layout, unit", [("nchw", "sfhw"), ("channels_last", "sfc")])
def test_layout_reaches_the_kernel(layout, unit):
    """The gate's f is a channel half of one conv output: its unit stride is the pixel stride in
    NCHW and the channel stride in channels_last, and Triton specialises that stride to 1."""
    case = cases.all_cases("tiny", ["sigmoid_gate"], ["bf16"], [layout], variants=False)[0]
    (launch,) = cases.run_case(case, "fused")["forward"].launches
    f = launch.tensors["F"]
    assert f.storage == launch.tensors["A"].storage and f.offset == 0 < launch.tensors["A"].offset
    assert launch.constexprs[unit] == 1 and unit not in launch.declared


def test_occupancy_and_waves_by_hand():
    h100 = archs.ARCHS[90]
    # 160 regs x 32 threads x 8 warps = 40960 of 65536 registers: one program per SM
    assert archs.blocks_per_sm(h100, 160, 8, 96 * 1024) == 1
    assert archs.occupancy(h100, 160, 8, 96 * 1024) == pytest.approx(8 / 64)
    # 32 regs, 4 warps, no shared memory: the 32-program limit (16 * 4 warps = 64 warps first)
    assert archs.blocks_per_sm(h100, 32, 4, 0) == 16
    # shared memory decides: 228 KB / (100 KB + 1 KB reserved) = 2
    assert archs.blocks_per_sm(h100, 32, 4, 100 * 1024) == 2
    assert archs.waves(h100, 80, 1) == pytest.approx(80 / 132)


def test_sass_and_ptxas_parsing():
    sass = "\n".join([
        "        /*0100*/                   LDG.E.128 R4, desc[UR4][R2.64] ;",
        "        /*0110*/              @!P0 LDG.E R9, desc[UR4][R6.64] ;",
        "        /*0120*/               @P1 LDG.E.U16 R3, desc[UR4][R6.64] ;",
        "        /*0130*/                   LDGSTS.E.BYPASS.LTC128B.128 [R1], desc[UR4][R2.64] ;",
        "        /*0140*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24 ;",
        "        /*0150*/                   STG.E.64 desc[UR4][R2.64], R4 ;",
    ])
    got = aot_compile.parse_sass(sass)
    assert got["loads"] == {"2": 1, "4": 1, "16": 2}
    assert got["load_bytes"] == 16 + 4 + 2 + 16 and got["load_bytes_128"] == 32
    assert got["stores"] == {"8": 1} and got["mma"] == {"HGMMA": 1}
    log = "ptxas info    : Used 80 registers, used 0 barriers\n    24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads"
    assert aot_compile.parse_ptxas(log) == {"ptxas_registers": 80, "spill_stores": 8, "spill_loads": 12, "stack": 24}
    ttir = "module {\n  tt.func public @k(%X: !tt.ptr<f32>, %Y: !tt.ptr<f32>, %N: i32) {\n    %x_1 = tt.load %X\n  }\n}"
    assert aot_compile.used_params(ttir, ["X", "Y", "N"]) == ["X"]
    # arguments named after the variable they flow into (p = A if ... else B) are matched by position
    ttir = ("module {\n  tt.func public @k(%p: !tt.ptr<f32> loc(\"p\"), %p_0: !tt.ptr<f32>, %q: !tt.ptr<f32>) {\n"
            "    %x = arith.select %c, %p, %p_0\n  }\n}")
    assert aot_compile.used_params(ttir, ["A", "B", "Q"]) == ["A", "B"]


def test_cli_gate_json(capsys, monkeypatch):
    from fastmtl.cli import main

    assert main(["gate", "--arch", "90", "--op", "sigmoid_gate", "--dtype", "bf16", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and {r["kernel"] for r in report["rows"]} == {"_gate_fwd_kernel", "_gate_bwd_kernel"}
    assert main(["gate", "--arch", "75"]) == 2
    assert "--arch" in capsys.readouterr().err
