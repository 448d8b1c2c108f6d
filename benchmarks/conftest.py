"""pytest-benchmark set-up for ``benchmarks/`` (op and model benchmarks).

Collection: the modules are named ``bench_*.py`` and collected by :func:`pytest_collect_file`
below. This conftest is only loaded when ``benchmarks/`` is on the command line, so the
normal ``pytest`` run (``testpaths = tests``) never collects or runs a benchmark.

* ``pytest benchmarks/ --benchmark-only``: time everything the device allows.
* ``pytest benchmarks/ --benchmark-disable``: run each benchmark once (CI, so none can rot).

Options (see ``pytest benchmarks/ --help``): ``--bench-device`` (default cuda when available),
``--bench-size`` (tiny|small|full; default full on CUDA, small on CPU), ``--bench-compile``
(also run the ``torch.compile`` rows on CPU, skipped there by default: inductor compiles for
seconds per shape and 50-85 s per model on this kind of machine) and ``--bench-threads``
(torch CPU threads, default 1, see ``_cpu_threads``).

On CPU the Triton rows (``fused``, ``fused_compile``) are skipped with a reason: the kernels
would run in the Triton interpreter, whose timing is meaningless.
"""
from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser):
    group = parser.getgroup("fastmtl benchmarks")
    group.addoption("--bench-device", default="auto", help="device for benchmarks/ (default: cuda if available)")
    group.addoption("--bench-size", default=None, choices=("tiny", "small", "full"),
                    help="sizes for benchmarks/ (default: full on CUDA, small on CPU)")
    group.addoption("--bench-compile", action="store_true",
                    help="also run the torch.compile rows on CPU (slow: inductor compiles every shape)")
    group.addoption("--bench-threads", type=int, default=1,
                    help="torch CPU threads for CPU benchmarks (default 1; 0: torch's default)")


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` (the default pattern only knows ``test_*.py``)."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def bench_device(config) -> torch.device:
    name = config.getoption("--bench-device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def bench_size(config) -> str:
    return config.getoption("--bench-size") or ("full" if bench_device(config).type == "cuda" else "small")


def pytest_generate_tests(metafunc):
    """Parameters of the benchmarks: ``test_<op>(case, mode, impl)`` in bench_ops.py and
    ``test_model(model, phase, impl)`` in bench_models.py."""
    from fastmtl.perf import cases as op_cases
    from fastmtl.perf import model_bench

    names = metafunc.fixturenames
    if "case" in names:
        op = metafunc.function.__name__[len("test_"):]
        shapes = op_cases.cases(op, bench_size(metafunc.config))
        metafunc.parametrize("case", shapes, ids=[c.name.replace(" ", "_") for c in shapes])
        metafunc.parametrize("mode", op_cases.MODES)
    if "model" in names:
        from fastmtl.models import MODEL_NAMES

        metafunc.parametrize("model", MODEL_NAMES)
        metafunc.parametrize("phase", model_bench.MODEL_PHASES)
    if "impl" in names:
        metafunc.parametrize("impl", op_cases.IMPLS)


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    return bench_device(request.config)


@pytest.fixture(scope="session")
def size(request) -> str:
    return bench_size(request.config)


@pytest.fixture(scope="session")
def allow_cpu_compile(request) -> bool:
    return request.config.getoption("--bench-compile")


@pytest.fixture(scope="session", autouse=True)
def _cpu_threads(request):
    """One intra-op thread on CPU by default: on a shared 2-core machine two threads stall each
    other's parallel regions under load (measured here: a train step 5-10x slower at load 7),
    one thread gives stable numbers. ``--bench-threads 0`` keeps torch's default."""
    threads = request.config.getoption("--bench-threads")
    if bench_device(request.config).type != "cpu" or threads <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_state():
    """Reproducible inputs; no compiled code or cached CUDA blocks carried between benchmarks."""
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
