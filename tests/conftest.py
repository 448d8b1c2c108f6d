"""Test set-up: the Triton interpreter must be on before triton is first imported.

The CPU kernel tests run the Triton kernels through the interpreter. On a GPU machine run the
CUDA module separately with compiled kernels: ``TRITON_INTERPRET=0 pytest tests/test_kernels_cuda.py``
(it skips while the interpreter is on)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    """Fresh but reproducible random data in every test."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def triton_mode(monkeypatch):
    """Run fastmtl's ops through their Triton kernels (through the interpreter on CPU)."""
    monkeypatch.setenv("FASTMTL_KERNELS", "triton")
