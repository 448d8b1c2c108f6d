"""THE train step: the trainer and the performance tools build it with the same function
(:func:`fastmtl.step.build_step`) and it does the same update."""
import inspect
import warnings
from collections import Counter

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fastmtl import step as fstep
from fastmtl.config import Config
from fastmtl.data.synthetic import generate_dataset
from fastmtl.perf import model_bench, profile, step_runner, weighting_overhead
from fastmtl.runtime import Runtime
from fastmtl.train import Run

from tiny_runs import one_thread  # noqa: F401 - autouse fixture


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("step") / "synthetic"
    generate_dataset(root, train=4, val=2, size=(32, 64), seed=5, workers=1, progress=False)
    return root


def tiny_cfg(data, out, **kw):
    return Config(model="joint", encoder="resnet18", dilation=(False, False, True), data_root=str(data), size=(32, 64),
                  batch_size=2, workers=0, max_steps=2, eval_every=2, quiet=True, out=str(out), device="cpu",
                  lr=1e-3, **kw)


@pytest.mark.parametrize("weighting", ["fixed", "uw"])
def test_build_step_is_the_trainers_step(tiny_data, tmp_path, weighting):
    """A step built by build_step from the run's config, data and state makes the same update as the run's."""
    run = Run(tiny_cfg(tiny_data, tmp_path / "run", weighting=weighting))
    assert isinstance(run.parts.step, fstep.TrainStep)
    parts = fstep.build_step(run.cfg, run.info, run.rt, run.total_steps, run.steps_per_epoch)
    parts.model.load_state_dict(run.model.state_dict())
    if run.weighting is not None:
        parts.weighting.load_state_dict(run.weighting.state_dict())
    batch = next(iter(run.train_loader))
    before = [p.detach().clone() for p in run.model.parameters()]
    loss, task_losses = run.train_step(batch)
    again, again_parts = parts.step(batch["rgb"], {t: batch[t] for t in run.cfg.tasks})
    assert loss == pytest.approx(again, rel=1e-5) and set(task_losses) == set(run.cfg.tasks)
    for a, b in zip(run.model.parameters(), parts.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))


def test_a_skipped_step_reads_as_nan():
    parts = {"depth": torch.tensor(0.5)}
    loss, read = fstep.host_values(fstep.StepResult(torch.tensor(1.5), parts, torch.tensor(True)))
    assert loss != loss and read == {}
    assert fstep.host_values(fstep.StepResult(torch.tensor(1.5), parts, torch.tensor(False))) == (1.5, {"depth": 0.5})


def test_every_perf_tool_builds_the_step_with_build_step(monkeypatch):
    """bench --models, profile --throughput and the weighting benchmark all step what build_step returns."""
    calls = []

    def spy(*args, **kwargs):
        parts = fstep.build_step(*args, **kwargs)
        calls.append(parts)
        return parts

    monkeypatch.setattr(step_runner, "build_step", spy)
    runner = model_bench.ModelRunner("joint", "train", "eager", "cpu", "tiny", warmup=1)
    assert runner.runner.parts is calls[-1] and isinstance(calls[-1].step, fstep.TrainStep)
    first, second = runner(), runner()
    assert isinstance(first, float) and first == first and second != first  # the step trains: the loss moves
    r = profile.profile_model(Config(model="joint", encoder="resnet18", fused=False), (32, 32), throughput=True,
                              batch_size=2)
    assert r["train_images_per_s"] > 0 and len(calls) == 2
    weighting_overhead.weighting_step("uw", "params", "cpu", batch=2, size=(32, 64)).train()
    assert len(calls) == 3 and calls[-1].weighting is not None and calls[-1].step.weighted is not None
    assert [c.tasks[0].name for c in calls] == [Config().tasks[0]] * 3  # the tasks come from Config.tasks


@pytest.fixture
def gloo_group(tmp_path):
    """A one-process gloo group (DDP needs one to be built)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


class _Broadcasts(TorchDispatchMode):
    """Counts the aten ops run inside, by name (the tests read ``broadcast_``)."""

    def __init__(self):
        super().__init__()
        self.count = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count[func.__name__.split(".")[0]] += 1
        return func(*args, **(kwargs or {}))


def test_build_step_wraps_the_model_in_ddp_with_bucket_view_gradients(tiny_data, tmp_path, gloo_group):
    """Under DDP on the CPU (gloo, plain BatchNorm): gradients as bucket views, batched copies where
    this torch has them, the buffers broadcast every forward (per-rank running statistics otherwise)."""
    cfg = tiny_cfg(tiny_data, tmp_path / "run")
    run = Run(cfg)
    rt = Runtime(torch.device("cpu"), world_size=2)  # "distributed": build_step wraps the model in DDP
    parts = fstep.build_step(cfg, run.info, rt, run.total_steps, run.steps_per_epoch)
    ddp = parts.forward
    assert isinstance(ddp, nn.parallel.DistributedDataParallel) and ddp.module is parts.model
    batched = "batched_grad_copy" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    assert ddp.gradient_as_bucket_view and getattr(ddp, "batched_grad_copy", False) == batched
    assert ddp.broadcast_buffers
    batch = next(iter(run.train_loader))
    parts.step(batch["rgb"], {t: batch[t] for t in cfg.tasks})
    grads = [p.grad for p in parts.model.parameters()]
    storages = {g.untyped_storage().data_ptr() for g in grads}
    assert all(g is not None for g in grads) and len(storages) < len(grads) / 10  # views of a few buckets


@pytest.mark.parametrize("sync_bn", [False, True])
def test_ddp_options_broadcast_buffers_unless_sync_batchnorm(gloo_group, sync_bn):
    """The options build in this torch's spelling (no deprecation warning) and broadcast the buffers
    before each forward exactly when the BatchNorms are not SyncBatchNorms."""
    options = fstep.ddp_options(sync_bn)
    assert options.sync_buffers == (not sync_bn)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        ddp = nn.parallel.DistributedDataParallel(module, **options.kwargs(torch.device("cpu")))
    assert ddp.gradient_as_bucket_view and ddp.broadcast_buffers == (not sync_bn)
    for _ in range(3):  # the second forward also broadcasts the rebuilt bucket assignment
        with _Broadcasts() as forward:
            ddp(torch.randn(2, 3, 8, 8)).sum().backward()
    assert (forward.count["broadcast_"] > 0) == (not sync_bn)
