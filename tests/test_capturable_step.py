"""The capturable train step: no host read inside :meth:`fastmtl.step.TrainStep.run` (by a
dispatch trace), the same results as the step with host reads it replaced (an all-ignored semseg
batch and a skipped non-finite step included), the on-device skip of the fused optimizers, and
``--cuda-graphs`` refused off CUDA."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fastmtl.cli import COMMANDS, build_parser, main
from fastmtl.cli.flags import config_from_args
from fastmtl.config import Config, ConfigError
from fastmtl.data.synthetic import generate_dataset
from fastmtl.optim import load_optimizer_state, make_optimizer, step_unless
from fastmtl.tasks.semseg import semseg_loss
from fastmtl.train import Run

from tiny_runs import one_thread  # noqa: F401 - autouse fixture

HOST_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default,
              torch.ops.aten.is_nonzero.default}


class NoHostReads(TorchDispatchMode):
    """Fails on any op that copies a tensor's value to the host (``.item()``, ``bool(t)``, ``.tolist()``)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            raise AssertionError(f"host read inside the step: {func}")
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("capturable") / "synthetic"
    generate_dataset(root, train=4, val=2, size=(32, 64), seed=7, workers=1, progress=False)
    return root


def tiny_run(data, out, **kw):
    return Run(Config(model="joint", encoder="resnet18", dilation=(False, False, True), data_root=str(data),
                      size=(32, 64), batch_size=2, workers=0, max_steps=8, eval_every=8, quiet=True, out=str(out),
                      device="cpu", lr=1e-3, **kw))


def device_batch(run):
    batch = next(iter(run.train_loader))
    return batch["rgb"], {t: batch[t] for t in run.cfg.tasks}


def test_the_trace_catches_a_host_read():
    with pytest.raises(AssertionError, match="host read"), NoHostReads():
        bool((torch.ones(2) > 0).any())


@pytest.mark.parametrize("weighting", ["fixed", "uw"])
def test_the_step_makes_no_host_read(tiny_data, tmp_path, weighting):
    run = tiny_run(tiny_data, tmp_path / "run", weighting=weighting)
    rgb, targets = device_batch(run)
    run.parts.step.run(rgb, targets)  # the first step allocates the optimizer state
    targets["semseg"] = torch.full_like(targets["semseg"], 255)  # every pixel ignored: decided on the device
    with NoHostReads():
        result = run.parts.step.run(rgb, targets)
    assert not bool(result.skipped) and run.parts.step.settle() == (0, 0)


def test_semseg_loss_is_the_mean_over_labelled_pixels_and_zero_when_all_are_ignored():
    logits = torch.randn(2, 5, 4, 6, requires_grad=True)
    target = torch.randint(0, 5, (2, 4, 6))
    target[0, :2] = 255
    torch.testing.assert_close(semseg_loss(logits, target), F.cross_entropy(logits, target, ignore_index=255))
    ignored = semseg_loss(logits, torch.full_like(target, 255))
    ignored.backward()
    assert ignored.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


class _OldStep:
    """The step as it was before it became capturable (the reference): a host read of the loss's
    finiteness, no backward and no scheduler step for a skipped step. Its optimizer is the same
    fused kernel (torch's unfused one rounds differently, and Adam amplifies that over steps)."""

    def __init__(self, run):
        step = run.parts.step
        self.step, self.model = step, run.model
        defaults = {k: v for k, v in step.optimizer.defaults.items() if k not in ("fused", "foreach")}
        self.optimizer = type(step.optimizer)(step.optimizer.param_groups[0]["params"], **defaults, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, step.scheduler.lr_lambdas[0])

    def __call__(self, rgb, targets, loss_fn):
        out = self.model(rgb)
        loss, _ = loss_fn(out, targets)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss).item():
            return math.nan
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()


def test_equal_results_to_the_step_with_host_reads(tiny_data, tmp_path):
    """Four steps (normal, every semseg pixel ignored, a NaN loss, normal) by the capturable step and
    by the old one from the same initialisation: the same losses, the NaN step skipped, the same
    parameters and LR step count (the skip counts read after each step, as at a logging interval)."""
    new, old = (tiny_run(tiny_data, tmp_path / name) for name in ("new", "old"))
    old.model.load_state_dict(new.model.state_dict())
    reference = _OldStep(old)
    rgb, targets = device_batch(new)
    ignored = {**targets, "semseg": torch.full_like(targets["semseg"], 255)}
    real_loss = new.parts.step.loss_fn

    def poisoned(out, t):
        total, parts = real_loss(out, t)
        return total * math.nan, parts

    batches = [(targets, real_loss), (ignored, real_loss), (targets, poisoned), (targets, real_loss)]
    new_losses, old_losses, skips = [], [], []
    for t, loss_fn in batches:
        new.parts.step.loss_fn = loss_fn
        new_losses.append(new.train_step({"rgb": rgb, **t})[0])
        skips.append(new.parts.step.settle())
        old_losses.append(reference(rgb, t, loss_fn))
    assert skips == [(0, 0), (0, 0), (1, 1), (0, 0)]
    assert math.isnan(new_losses[2]) and math.isnan(old_losses[2])
    assert new_losses[:2] + new_losses[3:] == pytest.approx(old_losses[:2] + old_losses[3:], rel=1e-5)
    assert new.scheduler.last_epoch == reference.scheduler.last_epoch == 3
    for a, b in zip(new.model.parameters(), old.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_skip_counts_read_later_rewind_the_schedule_and_count_the_longest_run(tiny_data, tmp_path):
    run = tiny_run(tiny_data, tmp_path / "run")
    rgb, targets = device_batch(run)
    step, real_loss = run.parts.step, run.parts.step.loss_fn
    for bad in (False, True, True, False, True):
        step.loss_fn = (lambda out, t: (real_loss(out, t)[0] * math.nan, {})) if bad else real_loss
        step.run(rgb, targets)
    assert run.scheduler.last_epoch == 5  # provisional: every step moved the schedule on
    assert step.settle() == (3, 2)
    assert run.scheduler.last_epoch == 2
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(run.cfg.lr * run.scheduler.lr_lambdas[0](2))
    step.run(rgb, targets)  # the run of skipped steps goes on across the read
    assert step.settle() == (1, 2)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_a_skipped_update_changes_nothing(name):
    cfg = Config(optimizer=name, lr=0.1)
    p = torch.nn.Parameter(torch.randn(4))
    opt = make_optimizer(cfg, [p])
    p.grad = torch.randn(4)
    before = p.detach().clone()
    step_unless(opt, torch.tensor(True))
    assert torch.equal(p, before)
    assert all(torch.count_nonzero(v) == 0 for v in opt.state[p].values())  # moments and step count untouched
    step_unless(opt, torch.tensor(False))
    assert not torch.equal(p, before)


def test_an_unfused_optimizer_is_refused_by_the_skippable_step():
    p = torch.nn.Parameter(torch.randn(2))
    with pytest.raises(TypeError, match="fused"):
        step_unless(torch.optim.SGD([p], lr=0.1), torch.tensor(False))


def test_an_unfused_optimizer_state_loads_fused():
    """A checkpoint saved with torch's unfused Adam (older runs: CPU step counts) loads into the fused one."""
    p = torch.nn.Parameter(torch.randn(3))
    old = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    old.step()
    opt = make_optimizer(Config(optimizer="adam", lr=0.1), [p])
    load_optimizer_state(opt, old.state_dict())
    assert opt.param_groups[0]["fused"] and opt.state[p]["step"].item() == 1.0
    step_unless(opt, torch.tensor(False))
    assert opt.state[p]["step"].item() == 2.0


def test_cuda_graphs_flag_parses_and_is_refused_off_cuda(tiny_data, tmp_path, capsys):
    args = ["train", "--cuda-graphs", "--device", "cpu", "--data-root", str(tiny_data), "--out", str(tmp_path / "r"),
            "--model", "joint", "--encoder", "resnet18", "--size", "32x64", "--max-steps", "1"]
    assert config_from_args(build_parser(COMMANDS).parse_args(args)).cuda_graphs
    with pytest.raises(ConfigError, match="--cuda-graphs needs a CUDA device"):
        tiny_run(tiny_data, tmp_path / "direct", cuda_graphs=True)
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fastmtl train: error: --cuda-graphs needs a CUDA device")
