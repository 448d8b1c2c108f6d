"""Test set-up: the Triton interpreter must be on before triton is first imported.

The CPU kernel tests run the Triton kernels through the interpreter. On a GPU machine run the
CUDA module separately with compiled kernels: ``TRITON_INTERPRET=0 pytest tests/test_kernels_cuda.py``
(it skips while the interpreter is on).

The first-call self-check of the fused ops (fastmtl.kernels.selfcheck) is off for the suite
(``FASTMTL_SELFCHECK=0`` unless set): under the interpreter every check costs interpreter time,
and the kernel tests must test the kernels themselves, never a silent fallback to the
reference. tests/test_selfcheck.py turns it on where it tests it."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("FASTMTL_SELFCHECK", "0")

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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small synthetic dataset (8 train, 4 val images at 64x96), generated once per session."""
    from fastmtl.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_dataset(root, train=8, val=4, size=(64, 96), seed=1, workers=1, progress=False)
    return root
