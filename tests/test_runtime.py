"""fastmtl.runtime.is_peer_failure: which errors mean another rank or node of the run is gone (the
CLI then prints one line with the resume command instead of a crash report). The real errors are
produced by tests/test_multinode.py; these are the texts gloo and NCCL raise."""
import pytest
import torch.distributed as dist

from fastmtl.runtime import is_peer_failure


@pytest.mark.parametrize("error", [
    RuntimeError("Application timeout caused pair closure"),  # gloo, a peer silent past --dist-timeout
    RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1"),
    RuntimeError("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 6000ms for recv "
                  "operation to complete"),
    RuntimeError("[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=5, OpType=ALLREDUCE)"),
    dist.DistError("store lost"),
])
def test_a_lost_peer_is_a_peer_failure(error):
    assert is_peer_failure(error)


@pytest.mark.parametrize("error", [RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("shape '[2, 3]' is invalid for input of size 7"),
                                   ValueError("Connection closed by peer")])
def test_other_errors_are_not(error):
    assert not is_peer_failure(error)
