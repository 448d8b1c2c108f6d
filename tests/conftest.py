"""Test set-up: the Triton interpreter must be on before triton is first imported.

The CPU kernel tests run the Triton kernels through the interpreter. On a GPU machine run the
CUDA module separately with compiled kernels: ``TRITON_INTERPRET=0 pytest tests/test_kernels_cuda.py``
(it skips while the interpreter is on).

The first-call self-check of the fused ops (fastmtl.kernels.selfcheck) is off for the suite
(``FASTMTL_SELFCHECK=0`` unless set): under the interpreter every check costs interpreter time,
and the kernel tests must test the kernels themselves, never a silent fallback to the
reference. tests/test_selfcheck.py turns it on where it tests it.

fastmtl's cache (``FASTMTL_CACHE``: compile-gate results, logs) is a temporary folder removed at the
end of the session unless ``FASTMTL_CACHE`` is set, so a bare ``pytest`` writes nothing into the
user's cache; CI sets it to keep the compile gate's results between runs (``.ci/run``)."""
import os
import shutil
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("FASTMTL_SELFCHECK", "0")
_TEMP_CACHE = None if os.environ.get("FASTMTL_CACHE") else tempfile.mkdtemp(prefix="fastmtl-test-cache-")
if _TEMP_CACHE:
    os.environ["FASTMTL_CACHE"] = _TEMP_CACHE

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    if _TEMP_CACHE:
        shutil.rmtree(_TEMP_CACHE, ignore_errors=True)


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
