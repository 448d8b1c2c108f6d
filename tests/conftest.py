"""Test set-up: the Triton interpreter must be on before triton is first imported."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    """Fresh but reproducible random data in every test."""
    torch.manual_seed(0)
    yield
