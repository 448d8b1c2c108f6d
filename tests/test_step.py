"""THE train step: the trainer and the performance tools build it with the same function
(:func:`fastmtl.step.build_step`) and it does the same update."""
import pytest
import torch

from fastmtl import step as fstep
from fastmtl.config import Config
from fastmtl.data.synthetic import generate_dataset
from fastmtl.perf import model_bench, profile, step_runner, weighting_overhead
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
