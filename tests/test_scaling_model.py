"""The scaling MODEL (fastmtl.perf.scaling_model, ``fastmtl traffic --step MODEL --gpus N``) on one
tiny traced step: efficiency 1 on one GPU and never rising with N, NCCL's closed forms, DDP's buckets
and per-step kernels against torch's own DDP (gloo, one process), the gradient methods' traffic, the CLI."""
import json
from dataclasses import replace
from collections import Counter

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fastmtl.perf.scaling_model as scaling
import fastmtl.perf.step_model as step
from fastmtl.cli import main
from fastmtl.perf.scaling_model import (FABRICS, NCCL_PROTOCOLS, collective_s, ddp_buckets, run_items, step_items,
                                        traffic)
from fastmtl.perf.step_model import GPUS, SCENARIOS, Kernel, Scenario, scenario_runs
from fastmtl.perf.step_model_trace import GradRecord, OpRecord, StepTrace, trace_step
from fastmtl.step import DDPOptions, ddp_options

GPU, FABRIC = GPUS["h200"], FABRICS["h200"]
COUNTS = (1, 2, 4, 8, 16, 32)


@pytest.fixture(scope="module")
def plain():
    return trace_step(batch=2, size=(32, 64))


@pytest.fixture
def cached_traces(monkeypatch, plain):
    """Both models trace nothing: every trace (fused or not, any weighting) is the tiny plain one."""
    for module in (scaling, step):
        monkeypatch.setattr(module, "trace_step", lambda *a, **k: plain)


def _ms(run, gpus, weighting="fixed", mode="params"):
    return run_items(step_items(run, GPU, FABRIC, gpus, weighting, mode))[0] * 1e3


def test_one_gpu_is_the_step_model_and_efficiency_one(cached_traces):
    report = scaling.scaling_model(batch=2, size=(32, 64), gpus=(1, 8), weightings=("fixed", "pcgrad"))
    steps = step.step_model(batch=2, size=(32, 64))["scenarios"]
    assert "MODEL" in report["kind"] and [c["grad_mode"] for c in report["configs"]] == [None, "params", "rep"]
    for c in report["configs"]:
        for name in SCENARIOS:
            one, eight = c["scenarios"][name]
            assert one["efficiency"] == 1.0 and one["added_ms"] == {}
            assert one["ms"] == pytest.approx(steps[name]["ms"], abs=2e-3)
            assert eight["ms"] > one["ms"] and eight["efficiency"] == pytest.approx(one["ms"] / eight["ms"], rel=3e-3)
            assert eight["ms"] == pytest.approx(one["ms"] + sum(eight["added_ms"].values()), abs=5e-3)


@pytest.mark.parametrize("weighting, mode", [("fixed", "params"), ("uw", "params"), ("pcgrad", "params"),
                                             ("pcgrad", "rep")])
def test_step_time_never_falls_as_gpus_grow(plain, weighting, mode):
    for name, run in scenario_runs(plain, plain).items():
        times = [_ms(run, n, weighting, mode) for n in COUNTS]
        assert times == sorted(times) and times[0] < times[1], (name, times)


def test_ddp_hides_most_of_its_gradient_all_reduces(plain):
    items = step_items(scenario_runs(plain, plain)["eager"], GPU, FABRIC, 8)
    network = sum(it.seconds for it in items if it.cause == "DDP gradients" and it.where == "async")
    exposed = run_items(items)[1]["DDP gradients"]
    assert network > 0 and exposed < 0.5 * network


def test_collectives_match_the_closed_forms():
    ring_ll, ring_simple, tree_ll = NCCL_PROTOCOLS
    big, small = 10 ** 9, 8
    # one node of 8: 2(N-1) = 14 NVLink steps; the large buffer goes Simple, at full bus bandwidth
    assert collective_s("all_reduce", big, 8, FABRIC) == pytest.approx(
        ring_simple.base_s + 14 * ring_simple.nvlink_step_s + 2 * 7 / 8 * big / FABRIC.nvlink_bus_bw)
    assert collective_s("all_reduce", small, 8, FABRIC) == pytest.approx(
        ring_ll.base_s + 14 * ring_ll.nvlink_step_s + 2 * 7 / 8 * small / (FABRIC.nvlink_bus_bw / 4))
    # 4 nodes: 62 steps, 6 of them between nodes; the NICs' bandwidth; a tree for the small buffer
    assert collective_s("all_reduce", big, 32, FABRIC) == pytest.approx(
        ring_simple.base_s + 56 * ring_simple.nvlink_step_s + 6 * ring_simple.net_step_s
        + 2 * 31 / 32 * big / (8 * FABRIC.nic_bus_bw))
    assert collective_s("all_reduce", small, 32, FABRIC) == pytest.approx(
        tree_ll.base_s + 2 * (7 * tree_ll.nvlink_step_s + 2 * tree_ll.net_step_s), rel=1e-3)
    assert collective_s("all_gather", big, 16, FABRIC) == pytest.approx(
        ring_simple.base_s + 14 * ring_simple.nvlink_step_s + ring_simple.net_step_s
        + 15 / 16 * big / (8 * FABRIC.nic_bus_bw))
    assert collective_s("broadcast", big, 4, FABRIC) == pytest.approx(
        ring_simple.base_s + 3 * ring_simple.nvlink_step_s + big / FABRIC.nvlink_bus_bw)
    assert collective_s("all_reduce", big, 1, FABRIC) == 0.0
    with pytest.raises(ValueError, match="whole nodes"):
        collective_s("all_reduce", big, 12, FABRIC)


class _Kernels(TorchDispatchMode):
    """Counts the aten ops run inside (a ``copy_`` of a tensor onto its own data is no kernel)."""

    def __init__(self):
        super().__init__()
        self.count = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if not (name == "copy_" and args[0].data_ptr() == args[1].data_ptr()):
            self.count[name] += 1
        return func(*args, **(kwargs or {}))


def _toy_step_trace(module: nn.Module, ready: list) -> StepTrace:
    """A trace of ``module``'s step as the scaling model reads it: one forward op per BatchNorm, one
    backward op per gradient (in ``ready``'s order), one optimizer op."""
    params = dict(module.named_parameters())
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())
    ops = [OpRecord("native_batch_norm", "norm", "forward", 0, 64, 1, write_bytes=(64, 32))] * bns
    grads = []
    for name in ready:
        ops.append(OpRecord("convolution_backward", "c", "backward", 0, 64, 1))
        p = params[name]
        grads.append(GradRecord(name, "float32", p.numel(), p.numel() * 4, False, len(ops)))
    ops.append(OpRecord("_fused_adam", "optimizer", "optimizer", 0, 64, 1))
    trace = StepTrace(ops=ops, grads=grads, buffers=[(str(b.dtype)[6:], b.numel() * b.element_size())
                                                     for b in module.buffers()], tasks=("a", "b"))
    return trace


@pytest.mark.parametrize("options", [ddp_options(sync_bn=False), ddp_options(sync_bn=True),
                                     DDPOptions(sync_buffers=True, batched_grad_copy=False)],
                         ids=["trainer-cpu", "trainer-sync-bn", "per-gradient-copies"])
def test_ddp_buckets_and_kernels_match_torch_ddp(tmp_path, options):
    """torch's DDP (gloo, one process) built with ``options`` (the trainer's, with and without
    SyncBatchNorm; the per-gradient copies of a torch without ``batched_grad_copy``) on a toy, under
    the trainer's ``zero_grad(set_to_none=True)``: its rebuilt buckets and the kernels it adds to a step."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 1024),
                           *[nn.Linear(1024, 1024) for _ in range(8)], nn.Linear(1024, 3))
    ready = []
    for name, p in module.named_parameters():
        p.register_post_accumulate_grad_hook(lambda _p, n=name: ready.append(n))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(module, **options.kwargs(torch.device("cpu")))
        for _ in range(3):  # the buckets are rebuilt after the first step
            ready.clear()
            module.zero_grad(set_to_none=True)
            with _Kernels() as forward:
                out = ddp(torch.randn(2, 3, 8, 8))
            with _Kernels() as backward:
                out.sum().backward()
        logged = ddp._get_ddp_logging_data()
    finally:
        dist.destroy_process_group()
    trace = _toy_step_trace(module, ready)
    buckets = ddp_buckets(trace.grads)
    assert len(buckets) == 3 and logged["rebuilt_bucket_sizes"] == ", ".join(
        str(sum(trace.grads[i].bytes for i in b)) for b in buckets)
    index = {n: i for i, (n, _) in enumerate(module.named_parameters())}
    assert logged["rebuilt_per_bucket_param_indices"] == ", ".join(
        " ".join(str(index[trace.grads[i].name]) for i in b) for b in buckets)

    items = step_items(Scenario(trace, [Kernel("k", 0, 64, 1, i) for i in range(len(trace.ops))], False),
                       GPU, FABRIC, 2, ddp=options)
    kernels = Counter(it.cause for it in items if it.where == "compute")
    collectives = Counter((it.cause, it.collective) for it in items if it.collective)
    params, buffers = len(ready), len(list(module.buffers()))
    torch_copies = sum(backward.count[k] for k in ("mul", "copy_", "_foreach_copy_", "div_"))
    # into the buckets only (gradients are bucket views): per gradient, or one copy + one division per bucket
    assert kernels["copies"] == torch_copies == (2 * len(buckets) if options.batched_grad_copy else params)
    assert collectives["DDP gradients", "all_reduce"] == backward.count["allreduce_"] == len(buckets)
    # fp32 running statistics flattened, broadcast and copied back; the lone int64 count in place
    synced = options.sync_buffers
    assert kernels["buffers"] == forward.count["cat"] + forward.count["copy_"] == (1 + buffers - 1) * synced
    assert collectives["buffers", "broadcast"] == forward.count["broadcast_"] == 2 * synced


def test_gradient_methods_send_what_the_engine_sends(plain):
    run = scenario_runs(plain, plain)["eager"]
    tasks = len(plain.tasks)
    shared = sum(g.numel for g in plain.grads if g.shared) * 4
    heads = sum(g.numel for g in plain.grads if not g.shared) * 4
    ddp, params, rep = (traffic(step_items(run, GPU, FABRIC, 8, w, m))
                        for w, m in (("fixed", "params"), ("pcgrad", "params"), ("pcgrad", "rep")))
    assert ddp["DDP gradients"]["bytes"] == shared + heads and ddp["DDP gradients"]["blocking"] == 0
    assert params["gradients"] == {"collectives": 2, "blocking": 2, "bytes": tasks * shared + heads}
    assert rep["gradients"] == {"collectives": 2, "blocking": 2, "bytes": shared + heads}
    assert params["method"]["bytes"] == 8 * tasks and rep["method"]["bytes"] == 8 * tasks + 8 * tasks * tasks
    assert "buffers" not in params and "buffers" not in ddp  # SyncBatchNorm keeps the buffers equal
    coalesced = traffic(step_items(run, GPU, FABRIC, 8, "pcgrad", "params", replace(scaling.MULTI_GPU_DDP,
                                                                                      sync_buffers=True)))
    dtypes = {dtype for dtype, _ in plain.buffers}
    assert coalesced["buffers"] == {"collectives": len(dtypes), "blocking": len(dtypes),
                                    "bytes": sum(n for _, n in plain.buffers)}  # one broadcast per dtype
    bns = sum(o.name == "native_batch_norm" for o in plain.ops)
    assert bns > 0 and ddp["SyncBatchNorm"]["collectives"] == ddp["SyncBatchNorm"]["blocking"] == 2 * bns


def test_fused_model_on_many_gpus_is_the_sync_batchnorm_build(monkeypatch):
    """On N > 1 GPUs the fused scenarios run the SyncBatchNorm build (BatchNorm + ReLU unfused, every
    BatchNorm synchronised, as the eager model), on one GPU the fused BatchNorm + ReLU; the difference
    is the 'unfused BN + ReLU' cause."""
    traces = {}

    def trace(**kw):
        key = (kw["fused"], kw.get("compiling", False), kw.get("sync_bn", False))
        traces[key] = traces.get(key) or trace_step(batch=2, size=(32, 64), fused=kw["fused"],
                                                    compiling=key[1], sync_bn=key[2])
        return traces[key]

    monkeypatch.setattr(scaling, "trace_step", trace)
    one, many = scaling._traced("fixed", "params")
    names = lambda run: Counter(o.name for o in run.trace.ops)
    assert names(one["fused"])["fastmtl::bn_relu"] > 0 and names(many["fused"])["fastmtl::bn_relu"] == 0
    assert names(one["fused_compile"])["fastmtl::bn_relu"] == 0  # the compile path
    for run in (many["fused"], many["fused_compile_graphs"]):
        collectives = Counter(it.cause for it in step_items(run, GPU, FABRIC, 8) if it.collective)
        eager = Counter(it.cause for it in step_items(many["eager"], GPU, FABRIC, 8) if it.collective)
        assert collectives["SyncBatchNorm"] == eager["SyncBatchNorm"] > 0
    report = scaling.scaling_model(batch=2, size=(32, 64), gpus=(1, 2))["configs"][0]["scenarios"]
    for name in SCENARIOS:
        one_gpu, two = report[name]
        assert two["ms"] == pytest.approx(one_gpu["ms"] + sum(two["added_ms"].values()), abs=5e-3)
        assert ("unfused BN + ReLU" in two["added_ms"]) == (name == "fused"), name


def test_cli_prints_the_scaling_model_and_its_json(capsys, cached_traces):
    argv = ["traffic", "--step", "default", "--batch", "2", "--size", "32x64", "--gpus", "16"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "SCALING MODEL" in text and "16 GPUs" in text and "--weighting fixed" in text
    assert main(argv + ["--weighting", "pcgrad", "--weighting-grads", "rep", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    s = out["scaling"]
    assert "MODEL" in s["kind"] and s["gpus"] == [1, 2, 4, 8, 16] and {"fabric", "configs"} <= set(s)
    (config,) = s["configs"]
    assert (config["weighting"], config["grad_mode"], config["communication"]) == ("pcgrad", "rep", "engine")
    assert [row["gpus"] for row in config["scenarios"]["fused_compile_graphs"]] == s["gpus"]
    assert {"gradients", "SyncBatchNorm", "method"} <= set(config["traffic"]) and "buffers" not in config["traffic"]


@pytest.mark.parametrize("argv, flag", [(["--gpus", "12"], "--gpus"), (["--gpus", "two"], "--gpus"),
                                        (["--gpus", "8", "--weighting", "nosuch"], "--weighting"),
                                        (["--gpus", "8", "--weighting-grads", "both"], "--weighting-grads"),
                                        (["--weighting", "pcgrad"], "--weighting")])
def test_cli_bad_scaling_input_names_the_flag(capsys, argv, flag):
    assert main(["traffic", "--step", "default", *argv]) != 0
    assert flag in capsys.readouterr().err
