"""The trainer with --weighting: every method trains 2 steps on the built-in data format, exact
resume with method state in last.pt, AMP, weights in TensorBoard and summary.json, flags."""
import json

import pytest
import torch

from fastmtl.checkpoint import load_checkpoint
from fastmtl.cli import main
from fastmtl.config import Config, ConfigError
from fastmtl.data.synthetic import generate_dataset
from fastmtl.train import train
from fastmtl.weighting import NAMES, METHODS

from tiny_runs import one_thread  # noqa: F401 - autouse fixture


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("weighting") / "synthetic"
    generate_dataset(root, train=8, val=2, size=(32, 64), seed=3, workers=1, progress=False)
    return root


def cfg(data, out, **kw):
    base = dict(model="joint", encoder="resnet18", dilation=(False, False, True), data_root=str(data), size=(32, 64),
                batch_size=2, workers=0, max_steps=2, eval_every=2, quiet=True, out=str(out), device="cpu", lr=1e-3)
    base.update(kw)
    return Config(**base)


def test_every_method_trains_two_steps(tiny_data, tmp_path):
    """Two optimizer steps of the trainer for every method and gradient mode, in one process
    (``Run.train_step``: the full loop with evaluation is covered by the tests below)."""
    from fastmtl.train import Run

    runs = [(n, "params") for n in NAMES] + [(n, "rep") for n in NAMES if METHODS[n].kind == "gradient"]
    for name, grads in runs:
        run = Run(cfg(tiny_data, tmp_path / f"{name}-{grads}", weighting=name, weighting_grads=grads))
        before = [p.detach().clone() for p in run.model.encoder.parameters()]
        batches = iter(run.train_loader)
        for _ in range(2):
            loss, parts = run.train_step(next(batches))
            assert loss == loss and set(parts) == {"semseg", "depth"}, (name, grads)
        assert any(not torch.equal(a, p) for a, p in zip(before, run.model.encoder.parameters())), (name, grads)
        weights = run.parts.step.weights()
        assert set(weights) == {"semseg", "depth"} and all(v == v for v in weights.values()), (name, grads)


@pytest.mark.parametrize("name,grads,opts", [("dwa", "params", {"period": 1}), ("famo", "params", {}),
                                             ("uw", "params", {}), ("graddrop", "rep", {})])
def test_resume_with_method_state_is_exact(tiny_data, tmp_path, name, grads, opts):
    kw = dict(weighting=name, weighting_grads=grads, weighting_opts=opts, max_steps=4, eval_every=4)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(cfg(tiny_data, straight, **kw))
    train(cfg(tiny_data, resumed, **kw), stop_after=2)
    assert load_checkpoint(resumed / "last.pt")["step"] == 2
    train(None, resume=str(resumed))
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["weighting"].keys() == b["weighting"].keys() and a["weighting"]
    for k, v in a["weighting"].items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, b["weighting"][k]), k
    assert json.dumps(_plain(a["weighting"])) == json.dumps(_plain(b["weighting"]))


def _plain(state):
    """The method state with tensors as lists (for an exact comparison of everything)."""
    if isinstance(state, dict):
        return {k: _plain(v) for k, v in state.items()}
    return state.tolist() if isinstance(state, torch.Tensor) else state


def test_run_defaults_for_methods():
    from fastmtl.weighting.training import method_for_run, param_groups

    assert method_for_run(Config(), ["semseg", "depth"], 10) is None  # fixed: the trainer's own path
    dwa = method_for_run(Config(weighting="dwa"), ["semseg", "depth"], 10)
    assert dwa.period == 10
    assert method_for_run(Config(weighting="dwa", weighting_opts={"period": 3}), ["semseg", "depth"], 10).period == 3
    assert method_for_run(Config(weighting="pcgrad", seed=5), ["semseg", "depth"], 10).options["seed"] == 5
    model = torch.nn.Linear(2, 2)
    assert len(param_groups(model, method_for_run(Config(weighting="pcgrad"), ["a", "b"], 1))) == 1
    groups = param_groups(model, method_for_run(Config(weighting="imtl_l"), ["a", "b"], 1))
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0


def test_uw_log_variances_are_trained_and_saved(tiny_data, tmp_path):
    out = tmp_path / "uw"
    train(cfg(tiny_data, out, weighting="uw", max_steps=3, eval_every=3))
    ckpt = load_checkpoint(out / "last.pt")
    assert not torch.equal(ckpt["weighting"]["log_var"], torch.full((2,), -0.5))
    assert len(ckpt["optimizer"]["param_groups"]) == 2 and ckpt["optimizer"]["param_groups"][1]["weight_decay"] == 0


@pytest.mark.parametrize("amp,grads", [("bf16", "rep"), ("fp16", "params")])
def test_amp(tiny_data, tmp_path, amp, grads):
    summary = train(cfg(tiny_data, tmp_path / "run", weighting="mgda_ub", weighting_grads=grads, amp=amp,
                        max_steps=1, eval_every=1))
    assert summary["final"]["step"] == 1
    assert all(v == v for v in summary["weighting"]["final_weights"].values())


def test_weights_go_to_tensorboard_every_step(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(cfg(tiny_data, out, weighting="rlw", max_steps=3, eval_every=3))
    events = EventAccumulator(str(out))
    events.Reload()
    semseg = events.Scalars("train/weight_semseg")
    depth = events.Scalars("train/weight_depth")
    assert [e.step for e in semseg] == [1, 2, 3]
    assert all(abs(a.value + b.value - 1) < 1e-5 for a, b in zip(semseg, depth))  # RLW: softmax weights
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weighting"]["final_weights"]["semseg"] == pytest.approx(semseg[-1].value, rel=1e-6)


def test_cli_flags(tiny_data, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--model", "joint", "--encoder", "resnet18", "--dilation", "F,F,T", "--data-root", str(tiny_data),
            "--size", "32x64", "--batch-size", "2", "--workers", "0", "--max-steps", "1", "--eval-every", "1",
            "--quiet", "--device", "cpu", "--out", str(out), "--weighting", "cagrad", "--weighting-opt", "calpha=0.4",
            "--weighting-opt", "rescale=2", "--weighting-grads", "rep"]
    assert main(args) == 0
    saved = Config.from_json((out / "config.json").read_text())
    assert saved.weighting == "cagrad" and saved.weighting_opts == {"calpha": 0.4, "rescale": 2}
    assert saved.weighting_grads == "rep"
    capsys.readouterr()
    assert main(["train", "--weighting", "nope"]) == 2
    assert "--weighting: unknown value 'nope'; valid choices: fixed, uw, dwa" in capsys.readouterr().err
    assert main(["train", "--weighting", "dwa", "--weighting-opt", "tau=2"]) == 2
    assert "valid options: period, temperature" in capsys.readouterr().err
    assert main(["train", "--weighting", "uw", "--weighting-grads", "rep"]) == 2
    assert "only for gradient methods" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--weighting-grads: unknown value 'both'"):
        Config(weighting="pcgrad", weighting_grads="both").validate()
    with pytest.raises(ConfigError, match="leak must be in"):
        Config(weighting="graddrop", weighting_opts={"leak": 2.0}).validate()


@pytest.mark.slow
@pytest.mark.parametrize("name,grads", [("pcgrad", "rep"), ("uw", "params")])
def test_torchrun_two_processes(tiny_data, tmp_path, name, grads):
    """The trainer under torchrun (gloo): a gradient method without DDP's reducer, a loss method through it."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "--log-dir", str(logs), "--redirects", "3",
           "-m", "fastmtl", "train", "--model", "joint", "--encoder", "resnet18", "--dilation", "F,F,T",
           "--data-root", str(tiny_data), "--size", "32x64", "--batch-size", "2", "--workers", "0",
           "--max-steps", "2", "--eval-every", "2", "--quiet", "--out", str(out), "--device", "cpu",
           "--weighting", name, "--weighting-grads", grads]
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, _torchrun_failure(logs, result.stderr)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["step"] == 2 and summary["weighting"]["method"] == name
    assert load_checkpoint(out / "last.pt")["weighting"]


def _torchrun_failure(log_dir, stderr: str) -> str:
    """Each rank's own stderr (torchrun --redirects writes one file per rank), then torchrun's tail."""
    logs = [f"--- {p.relative_to(log_dir)} ---\n{p.read_text()[-2500:]}" for p in sorted(log_dir.rglob("stderr.log"))]
    return "\n".join(logs) + "\n--- torchrun ---\n" + stderr[-1500:]


def test_fused_kernels_take_repeated_per_task_backwards(tiny_data, tmp_path, triton_mode):
    """The fused Triton modules (interpreter on CPU) under T retained backwards: the same step as
    eager (plain SGD at lr 1: the parameters move by exactly the combined gradient)."""
    from fastmtl.train import Run

    finals = []
    for fused in (False, True):
        run = Run(cfg(tiny_data, tmp_path / f"f{fused}", model="distill", size=(32, 32), fused=fused,
                      weighting="pcgrad", max_steps=1, optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0))
        run.train_step(next(iter(run.train_loader)))
        finals.append({k: v.detach().clone() for k, v in run.model.state_dict().items()})
    for k, v in finals[0].items():
        assert torch.allclose(v.float(), finals[1][k].float(), atol=1e-4, rtol=1e-4), k


def test_nan_task_weights_skip_the_trainers_step_and_leave_the_model(tiny_data, tmp_path):
    """The issue's case: DWA with a NaN temperature (now refused as an option, so set behind the
    constructor's back) gives NaN weights from its third period on; that step is reported as
    skipped (a NaN loss, which the trainer logs and counts) and the model is not touched."""
    from fastmtl.train import Run

    run = Run(cfg(tiny_data, tmp_path / "dwa", weighting="dwa", weighting_opts={"period": 1}))
    run.parts.weighting.options["temperature"] = float("nan")
    batches = iter(run.train_loader)
    for _ in range(2):  # weights 1 for the first two periods
        loss, _ = run.train_step(next(batches))
        assert loss == loss
    before = [p.detach().clone() for p in run.model.parameters()]
    loss, parts = run.train_step(next(batches))
    assert loss != loss and parts == {}
    assert all(torch.equal(a, p) for a, p in zip(before, run.model.parameters()))
