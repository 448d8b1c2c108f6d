"""DDP (gloo, 2 processes): every rank applies the same update, equal to one process with the
same global batch, for loss methods (through DDP, built with the trainer's options:
:func:`fastmtl.step.ddp_options`), and gradient methods in both modes."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastmtl.step import ddp_options
from fastmtl.weighting import build
from fastmtl.weighting.engine import Sync
from fastmtl.weighting.training import WeightedTrainStep

from weighting_toys import ToyModel, toy_data, toy_loss

CASES = [("uw", "params"), ("dwa", "params"), ("famo", "params"), ("gls", "params"), ("pcgrad", "params"),
         ("nash_mtl", "params"), ("gradnorm", "params"), ("graddrop", "params"), ("mgda_ub", "rep"),
         ("imtl_g", "rep"), ("graddrop", "rep")]
STEPS, GLOBAL_BATCH = 3, 8


def train(name, mode, rank, world):
    """Train the toy for STEPS steps on this rank's share of each global batch; returns the state."""
    torch.manual_seed(rank * 100)  # different init per rank: rank 0's must be broadcast
    model = ToyModel(batch_norm=False)  # per-rank batch statistics would differ from the global batch's
    method = build(name, 2, **({"period": 2} if name == "dwa" else {}))
    forward = model
    if world > 1 and method.kind == "loss":
        # DDP broadcasts rank 0's init; gradients are views of its buckets, as in fastmtl train
        forward = torch.nn.parallel.DistributedDataParallel(model, **ddp_options(False).kwargs(torch.device("cpu")))
    opt = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.05, fused=True)
    step = WeightedTrainStep(method, model, forward, toy_loss, ["a", "b"], mode, world_size=world)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    per = GLOBAL_BATCH // world
    for s in range(STEPS):
        x, ya, yb = toy_data(GLOBAL_BATCH, seed=s)
        sl = slice(rank * per, (rank + 1) * per)
        step(x[sl], ya[sl], yb[sl], torch.enable_grad, opt, torch.amp.GradScaler("cpu", enabled=False), sched)
    return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "method": method.state_dict(), "weights": method.last_weights.clone()}


def rank_tensors(rank):
    """Tensors that differ per rank: two fp32 (one channels_last), a lone fp64, two int64 (one 0-d)."""
    g = torch.Generator().manual_seed(rank)
    return [torch.randn(5, generator=g), torch.randn(2, 3, 4, 5, generator=g).to(memory_format=torch.channels_last),
            torch.randn(3, generator=g, dtype=torch.float64), torch.tensor(rank + 7), torch.arange(4) * (rank + 1)]


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for name, mode in CASES:
            torch.save(train(name, mode, rank, world), os.path.join(out_dir, f"{name}-{mode}-{rank}.pt"))
        tensors = rank_tensors(rank)
        Sync(world).broadcast_(tensors)
        torch.save(tensors, os.path.join(out_dir, f"broadcast-{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_apply_the_update_of_one_process_with_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for name, mode in CASES:
        r0, r1 = (torch.load(tmp_path / f"{name}-{mode}-{r}.pt", weights_only=True) for r in (0, 1))
        # every rank: the same parameters (bit for bit) and the same method state
        for k, v in r0["model"].items():
            assert torch.equal(v, r1["model"][k]), (name, mode, k)
        assert torch.equal(r0["weights"], r1["weights"]), (name, mode)
        torch.manual_seed(0)
        # one process, the global batch, rank 0's init (a single-rank run seeds like rank 0)
        single = train(name, mode, rank=0, world=1)
        for k, v in single["model"].items():
            assert torch.allclose(v, r0["model"][k], atol=1e-5), (name, mode, k)
    # the engine's coalesced broadcast (per dtype, flattened, copied back): rank 0's values everywhere,
    # in every tensor's own layout
    for r in (0, 1):
        got = torch.load(tmp_path / f"broadcast-{r}.pt", weights_only=True)
        for t, want in zip(got, rank_tensors(0)):
            assert t.dtype == want.dtype and t.stride() == want.stride() and torch.equal(t, want)

