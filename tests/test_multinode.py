"""Multi-node DDP: two torchrun "nodes" on this host (``--nnodes 2``, c10d rendezvous, gloo, one
process each) train a tiny run on a small synthetic set.

- only global rank 0 writes the run directory: the nodes get different ``--out`` and the other one
  stays absent; every rank ends with bit-identical weights;
- two nodes x 1 process train exactly as one node x 2 processes (same world size and global batch);
- a node killed after ``last.pt`` exists fails the other one with a one-line error (no hang), and
  ``fastmtl train --resume`` on both nodes finishes with the weights of the uninterrupted run;
- a hung node (alive, silent) fails the other one after ``--dist-timeout``;
- the built-in dataset is made once per node cache (a node whose cache rank 0 does not share makes its own).

The c10d rendezvous ignores ``--node-rank``: the global ranks follow the order of the nodes' ids
(here: their torchrun PIDs), so the test reads which torchrun got which rank from the worker
(tests/multinode_worker.py). torchrun starts its workers in their own sessions: killing a node means
killing its torchrun and its workers.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import torch
import torch.distributed as dist

from fastmtl import data as fdata
from fastmtl.checkpoint import load_checkpoint
from fastmtl.files import read_jsonl
from fastmtl.runtime import Runtime
from fastmtl.train import ensure_default_data

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "multinode_worker.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
DIST_TIMEOUT = 20  # seconds a collective waits for a lost process: a hang fails a test in seconds, not 30 min
HUNG_TIMEOUT = 6  # the --dist-timeout of the hung-node test (above the ranks' start-up skew on a busy machine)
STEPS, STALL_AT = 6, 2  # 2 steps per epoch (8 images, global batch 4); last.pt every 2 steps
RUN_SECONDS = 240  # the most any launch may take on a busy machine


def train_args(data: Path, out: Path, dist_timeout: float = DIST_TIMEOUT) -> List[str]:
    return ["--model", "joint", "--encoder", "resnet18", "--dilation", "F,F,T", "--data-root", str(data),
            "--size", "32x64", "--batch-size", "2", "--workers", "0", "--max-steps", str(STEPS), "--eval-every", "4",
            "--checkpoint-every", "2", "--checkpoint-minutes", "0", "--lr", "1e-3", "--quiet", "--device", "cpu",
            "--dist-timeout", str(dist_timeout), "--out", str(out)]


def worker(weights: Path, args: List[str], stall_at: int = 0) -> List[str]:
    """The torchrun program of tests/multinode_worker.py: ``fastmtl train args``, weights saved per rank."""
    weights.mkdir(parents=True, exist_ok=True)
    return [str(WORKER), str(weights), str(stall_at), *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def nodes(logs: Path, programs: List[List[str]], nproc: int = 1) -> Iterator[List[subprocess.Popen]]:
    """One torchrun per program, each a "node" of one rendezvous on this host; whatever still runs at
    the end is stopped (torchrun, then the workers it left: they run in their own sessions)."""
    port, rdzv_id = _free_port(), logs.name
    procs = []
    for node, program in enumerate(programs):
        (logs / f"node{node}").mkdir(parents=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(len(programs)), "--node-rank", str(node),
               "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", rdzv_id, "--rdzv-conf", f"is_host={int(node == 0)},join_timeout=60",
               "--log-dir", str(logs / f"node{node}"), "--redirects", "3", *program]
        with open(logs / f"node{node}.log", "w") as log:
            procs.append(subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT))
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()  # torchrun stops its workers
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for pid_file in logs.parent.rglob("rank*.pid"):
            kill_worker(int(pid_file.read_text().split()[0]))


def kill_worker(pid: int) -> None:
    """SIGKILL a worker of tests/multinode_worker.py if it still runs."""
    try:
        if "multinode_worker" in Path(f"/proc/{pid}/cmdline").read_text():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):  # gone already
        pass


def failure(logs: Path) -> str:
    """Each rank's stderr (torchrun --redirects: one file per rank), then each torchrun's tail."""
    parts = [f"--- {p.relative_to(logs)} ---\n{p.read_text()[-2500:]}" for p in sorted(logs.rglob("stderr.log"))]
    parts += [f"--- {p.name} ---\n{p.read_text()[-1500:]}" for p in sorted(logs.glob("node*.log"))]
    return "\n".join(parts)


def finish(procs: List[subprocess.Popen], logs: Path) -> None:
    for p in procs:
        assert p.wait(timeout=RUN_SECONDS) == 0, failure(logs)


def node_of_rank(weights: Path, procs: List[subprocess.Popen]) -> Dict[int, int]:
    """``{global rank: index of the torchrun it runs under}`` from the workers' pid files."""
    agents = [p.pid for p in procs]
    out = {}
    for rank in (0, 1):
        pid_file = weights / f"rank{rank}.pid"
        if pid_file.is_file():
            out[rank] = agents.index(int(pid_file.read_text().split()[1]))
    return out


def wait_for(condition, procs: List[subprocess.Popen], logs: Path, what: str) -> None:
    deadline = time.time() + RUN_SECONDS
    while not condition():
        assert all(p.poll() is None for p in procs), f"a node ended before {what}:\n{failure(logs)}"
        assert time.time() < deadline, f"no {what} after {RUN_SECONDS} s:\n{failure(logs)}"
        time.sleep(0.05)


def kill_node(procs: List[subprocess.Popen], weights: Path, rank: int) -> subprocess.Popen:
    """SIGKILL the torchrun that runs ``rank`` and its worker, as a node failure would; returns the
    torchrun of the other rank."""
    where = node_of_rank(weights, procs)
    procs[where[rank]].kill()
    kill_worker(int((weights / f"rank{rank}.pid").read_text().split()[0]))
    return procs[where[1 - rank]]


def error_lines(logs: Path, node: int) -> List[str]:
    """The stderr lines of the worker(s) of torchrun ``node``."""
    return [line for p in sorted((logs / f"node{node}").rglob("stderr.log")) for line in p.read_text().splitlines()]


def state(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


# BatchNorm running statistics: DDP broadcasts rank 0's before every forward, so after the last step
# each rank holds those of its own last batch; rank 0's are the run's (checkpoints, evaluation)
LOCAL_BUFFERS = ("running_mean", "running_var")


def assert_same_weights(got: Dict[str, torch.Tensor], want: Dict[str, torch.Tensor], local_buffers: bool = True) -> None:
    """Bit-identical state dicts (with ``local_buffers`` False: but the BatchNorm running statistics)."""
    assert got.keys() == want.keys()
    for k, v in want.items():
        if local_buffers or not k.endswith(LOCAL_BUFFERS):
            assert torch.equal(got[k], v), k


@pytest.fixture(scope="module")
def two_nodes(tiny_data, tmp_path_factory):
    """A finished 2-node run: ``(tmp, [node 0's --out, node 1's --out], {rank: node})``."""
    tmp = tmp_path_factory.mktemp("two-nodes")
    outs = [tmp / "out-node0", tmp / "out-node1"]
    with nodes(tmp / "logs", [worker(tmp / "weights", train_args(tiny_data, out)) for out in outs]) as procs:
        finish(procs, tmp / "logs")
        ranks = node_of_rank(tmp / "weights", procs)
    return tmp, outs, ranks


@pytest.mark.slow
def test_only_global_rank_0_writes_the_run_and_every_rank_ends_equal(two_nodes):
    tmp, outs, ranks = two_nodes
    assert sorted(ranks.values()) == [0, 1], ranks
    run, other = outs[ranks[0]], outs[ranks[1]]
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt"}
    assert not other.exists()  # rank 1 created nothing, not even the folder
    rank0, rank1 = state(tmp / "weights" / "rank0.pt"), state(tmp / "weights" / "rank1.pt")
    assert_same_weights(rank1, rank0, local_buffers=False)
    assert_same_weights(load_checkpoint(run / "last.pt")["model"], rank0)
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [4, STEPS]


@pytest.mark.slow
def test_two_nodes_train_as_one_node_with_the_same_world_size(two_nodes, tiny_data, tmp_path):
    tmp, _, _ = two_nodes
    with nodes(tmp_path / "logs", [worker(tmp_path / "weights", train_args(tiny_data, tmp_path / "out"))],
               nproc=2) as procs:
        finish(procs, tmp_path / "logs")
    one_node = state(tmp_path / "weights" / "rank0.pt")
    assert_same_weights(state(tmp_path / "weights" / "rank1.pt"), one_node, local_buffers=False)
    assert_same_weights(state(tmp / "weights" / "rank0.pt"), one_node)


@pytest.mark.slow
def test_a_killed_node_fails_the_other_and_both_resume_to_the_uninterrupted_run(two_nodes, tiny_data, tmp_path):
    run, weights = tmp_path / "run", tmp_path / "weights"
    logs = tmp_path / "killed"
    with nodes(logs, [worker(weights, train_args(tiny_data, run), STALL_AT)] * 2) as procs:
        wait_for(lambda: (run / "last.pt").is_file() and len(node_of_rank(weights, procs)) == 2, procs, logs,
                 "last.pt")
        survivor = kill_node(procs, weights, rank=1)
        started = time.time()
        assert survivor.wait(timeout=RUN_SECONDS) != 0
        assert time.time() - started < DIST_TIMEOUT  # the lost connection fails it at once, not at the timeout
        survivor_node = procs.index(survivor)
    said = [line for line in error_lines(logs, survivor_node) if line.startswith("fastmtl train:")]
    assert len(said) == 1 and "Traceback" not in "\n".join(error_lines(logs, survivor_node)), failure(logs)
    assert "the distributed run lost a process" in said[0] and "--resume" in said[0], said
    assert load_checkpoint(run / "last.pt")["step"] == STALL_AT
    assert not (run / ".lock").exists()  # rank 0 ended cleanly: its lock is gone

    resume = ["-m", "fastmtl", "train", "--resume", str(run)]
    with nodes(tmp_path / "resumed", [resume, resume]) as procs:
        finish(procs, tmp_path / "resumed")
    uninterrupted = state(two_nodes[0] / "weights" / "rank0.pt")
    assert_same_weights(load_checkpoint(run / "last.pt")["model"], uninterrupted)
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [4, STEPS]


@pytest.mark.slow
def test_a_hung_node_fails_the_other_after_the_dist_timeout(tiny_data, tmp_path):
    run, weights, logs = tmp_path / "run", tmp_path / "weights", tmp_path / "logs"
    with nodes(logs, [worker(weights, train_args(tiny_data, run, HUNG_TIMEOUT), STALL_AT)] * 2) as procs:
        wait_for(lambda: (run / "last.pt").is_file() and len(node_of_rank(weights, procs)) == 2, procs, logs,
                 "last.pt")
        started = time.time()
        survivor = procs[node_of_rank(weights, procs)[0]]
        assert survivor.wait(timeout=RUN_SECONDS) != 0  # rank 1 sleeps: only the timeout ends rank 0's wait
        waited = time.time() - started
        survivor_node = procs.index(survivor)
        kill_node(procs, weights, rank=1)
    assert HUNG_TIMEOUT - 0.5 < waited < HUNG_TIMEOUT + 60, waited
    said = [line for line in error_lines(logs, survivor_node) if line.startswith("fastmtl train:")]
    assert len(said) == 1 and "the distributed run lost a process" in said[0], failure(logs)


@pytest.mark.parametrize("rank, local_rank, calls", [
    (0, 0, ["render", "barrier", "barrier"]),  # global rank 0 first, while everyone waits
    (1, 0, ["barrier", "render", "barrier"]),  # another node's first process: then, in its own cache
    (1, 1, ["barrier", "barrier"]),  # any other process waits for its node's
])
def test_the_built_in_set_is_made_once_per_node_cache(rank, local_rank, calls, monkeypatch):
    seen = []
    monkeypatch.setattr(fdata, "ensure_default_dataset", lambda progress: seen.append("render"))
    monkeypatch.setattr(dist, "barrier", lambda: seen.append("barrier"))
    rt = Runtime(torch.device("cpu"), rank=rank, world_size=2, local_rank=local_rank)
    assert ensure_default_data(rt, progress=False) == fdata.default_data_root()
    assert seen == calls
