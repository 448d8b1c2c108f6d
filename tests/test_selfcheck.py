"""The first-call self-check of the fused ops and its fallback (fastmtl.kernels.selfcheck).

Under the Triton interpreter on CPU (FASTMTL_KERNELS=triton): correct kernels pass and keep
running; a launcher forced to return a wrong result, or to raise, makes the op warn once and run
its reference from then on -- outputs and gradients then equal the reference's exactly, forward
and backward alike; ``FASTMTL_SELFCHECK=0`` disables the check; verdicts are per dtype and
layout; no probe runs on fake tensors.
"""
import warnings

import pytest
import torch

from fastmtl.kernels import aspp, bn_relu, se_scale, selfcheck, sigmoid_gate, silog
from fastmtl.kernels.selfcheck import SelfCheckWarning

# op -> (its launch module, where the op and its probe look the launchers up; forward launcher, backward launcher)
LAUNCHERS = {
    "se_scale": (se_scale.launch, "se_scale_forward_triton", "se_scale_backward_triton"),
    "sigmoid_gate": (sigmoid_gate.launch, "sigmoid_gate_forward_triton", "sigmoid_gate_backward_triton"),
    "aspp_project": (aspp.launch, "aspp_project_forward_triton", "aspp_project_backward_triton"),
    "silog_stats": (silog.launch, "silog_stats_triton", "silog_stats_backward_triton"),
    "bn_relu": (bn_relu.launch, "bn_relu_forward_triton", "bn_relu_backward_triton"),
}


@pytest.fixture
def checked(monkeypatch):
    """Triton kernels (interpreted) with the self-check on and no verdicts yet."""
    monkeypatch.setenv("FASTMTL_KERNELS", "triton")
    monkeypatch.setenv("FASTMTL_SELFCHECK", "1")
    selfcheck.reset()
    yield
    selfcheck.reset()


def _inputs(op, dtype=torch.float32, channels_last=False):
    """Fresh leaves (requiring grad) and a function of them calling the registered op."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def act(*shape):
        return torch.randn(shape, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()

    if op == "se_scale":
        leaves = [act(2, 12, 3, 5), act(2, 12, 3, 5)] + [torch.randn(s, requires_grad=True) for s in ((3, 12), (3,), (12, 3), (12,))]
        return leaves, lambda x, i, *w: torch.ops.fastmtl.se_scale(x, *w, i)
    if op == "sigmoid_gate":
        leaves = [act(2, 10, 3, 5), act(2, 5, 3, 5)]
        return leaves, lambda y, r: torch.ops.fastmtl.sigmoid_gate(y[:, :5], y[:, 5:], r)
    if op == "aspp_project":
        leaves = [act(2, 6, 3, 5) for _ in range(4)] + [torch.randn(7, 24, dtype=dtype, requires_grad=True),
                                                         torch.randn(2, 7, dtype=dtype, requires_grad=True)]
        scale, shift = torch.rand(7) + 0.5, torch.randn(7)
        return leaves, lambda *t: torch.ops.fastmtl.aspp_project(list(t[:4]), t[4], t[5], scale, shift, True)
    if op == "bn_relu":
        leaves = [act(2, 6, 3, 5), torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)]
        running = torch.zeros(6), torch.ones(6)  # updated by every call: each run's own copy
        return leaves, lambda x, w, b: bn_relu.batch_norm_relu(x, w, b, *(t.clone() for t in running))
    target = torch.rand(2, 1, 4, 6) * 9 + 1
    leaves = [(target.log() + 0.1 * torch.randn(2, 1, 4, 6)).to(dtype).requires_grad_()]
    return leaves, lambda p: torch.ops.fastmtl.silog_stats(p, target, 1.0, 8.0, 0.01, True)


def _run(fn, leaves):
    """``(output, gradients of every leaf)`` for a fixed random output gradient."""
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, torch.ones_like(out).normal_(generator=torch.Generator().manual_seed(1)))
    return [out.detach(), *grads]


def _reference(fn, leaves, monkeypatch):
    monkeypatch.setenv("FASTMTL_KERNELS", "reference")
    try:
        return _run(fn, [t.detach().clone().requires_grad_() for t in leaves])
    finally:
        monkeypatch.setenv("FASTMTL_KERNELS", "triton")


def _first_float(obj):
    if isinstance(obj, torch.Tensor):
        return obj if obj.is_floating_point() and obj.numel() else None
    for o in obj:
        t = _first_float(o)
        if t is not None:
            return t
    return None


def _patch(monkeypatch, op, which, behaviour, when=lambda args: True):
    """Replace ``op``'s forward or backward launcher by a counting wrapper that perturbs its
    first floating result (``wrong``), raises (``raise``) or passes it through (``spy``) --
    only for calls whose arguments satisfy ``when``. Returns the list of calls."""
    module, fwd, bwd = LAUNCHERS[op]
    name = fwd if which == "forward" else bwd
    original = getattr(module, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if behaviour == "raise" and when(args):
            raise RuntimeError("forced launcher failure")
        result = original(*args, **kwargs)
        if behaviour == "wrong" and when(args):
            _first_float(result).mul_(1.5).add_(0.5)
        return result

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.mark.parametrize("op", selfcheck.OPS)
def test_correct_kernels_pass_and_keep_running(op, checked, monkeypatch):
    fwd_calls = _patch(monkeypatch, op, "forward", "spy")
    bwd_calls = _patch(monkeypatch, op, "backward", "spy")
    leaves, fn = _inputs(op)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SelfCheckWarning)
        got = _run(fn, leaves)
    (result,) = selfcheck.results()
    assert (result.op, result.device, result.dtype, result.layout, result.ok) == (op, "cpu", "float32", "nchw", True)
    probe_fwd, probe_bwd = len(fwd_calls), len(bwd_calls)
    assert probe_fwd >= 1 and probe_bwd >= 1  # the probe ran the launchers
    got = _run(fn, leaves)  # checked: the op runs its kernels, no new probe
    assert len(fwd_calls) == probe_fwd + 1 and len(bwd_calls) == probe_bwd + 1
    assert len(selfcheck.results()) == 1
    for g, r in zip(got, _reference(fn, leaves, monkeypatch)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("behaviour", ["wrong", "raise"])
@pytest.mark.parametrize("which", ["forward", "backward"])
@pytest.mark.parametrize("op", selfcheck.OPS)
def test_failed_check_warns_once_and_falls_back(op, which, behaviour, checked, monkeypatch):
    calls = {w: _patch(monkeypatch, op, w, behaviour if w == which else "spy") for w in ("forward", "backward")}
    leaves, fn = _inputs(op)
    with pytest.warns(SelfCheckWarning) as record:
        got = _run(fn, leaves)
    assert len(record) == 1
    message = str(record[0].message)
    assert op in message and "cpu" in message and "float32" in message and "nchw" in message
    expected = "forced launcher failure" if behaviour == "raise" else "max abs diff"
    assert expected in message
    (result,) = selfcheck.results()
    assert not result.ok and expected in result.error
    after_probe = {w: len(c) for w, c in calls.items()}
    ref = _reference(fn, leaves, monkeypatch)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=0, atol=0)
    with warnings.catch_warnings():  # once: the verdict is kept, no second warning, no kernel call
        warnings.simplefilter("error", SelfCheckWarning)
        again = _run(fn, leaves)
    assert {w: len(c) for w, c in calls.items()} == after_probe
    for g, r in zip(again, ref):
        torch.testing.assert_close(g, r, rtol=0, atol=0)


def test_switch_off_trusts_the_kernels(checked, monkeypatch):
    monkeypatch.setenv("FASTMTL_SELFCHECK", "0")
    calls = _patch(monkeypatch, "sigmoid_gate", "forward", "wrong")
    leaves, fn = _inputs("sigmoid_gate")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SelfCheckWarning)
        got = _run(fn, leaves)
    assert len(calls) == 1 and selfcheck.results() == []
    ref = _reference(fn, leaves, monkeypatch)
    assert not torch.allclose(got[0], ref[0])  # the (wrong) kernel ran


def test_verdicts_are_per_dtype_and_layout(checked, monkeypatch):
    # the forward kernel is wrong for channels_last inputs only (f is args[0])
    _patch(monkeypatch, "sigmoid_gate", "forward", "wrong", when=lambda args: args[0].stride(1) == 1)
    got = {}
    for dtype, cl in ((torch.float32, False), (torch.float32, True), (torch.float64, True), (torch.float64, False)):
        leaves, fn = _inputs("sigmoid_gate", dtype, cl)
        if cl:
            with pytest.warns(SelfCheckWarning):
                got[dtype, cl] = _run(fn, leaves)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error", SelfCheckWarning)
                got[dtype, cl] = _run(fn, leaves)
        ref = _reference(fn, leaves, monkeypatch)
        for g, r in zip(got[dtype, cl], ref):
            torch.testing.assert_close(g, r)
    verdicts = {(r.dtype, r.layout): r.ok for r in selfcheck.results()}
    assert verdicts == {("float32", "nchw"): True, ("float32", "channels_last"): False,
                        ("float64", "channels_last"): False, ("float64", "nchw"): True}


def test_no_probe_on_fake_or_meta_tensors(checked, monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    calls = _patch(monkeypatch, "se_scale", "forward", "raise")
    with FakeTensorMode():
        fake = torch.randn(2, 4, 3, 3)
        assert selfcheck.passes("se_scale", fake)
    assert selfcheck.passes("se_scale", torch.empty(2, 4, 3, 3, device="meta"))
    assert calls == [] and selfcheck.results() == []


def test_check_runs_whatever_the_switch_and_caches(checked, monkeypatch):
    monkeypatch.setenv("FASTMTL_SELFCHECK", "0")
    first = selfcheck.check("silog_stats", "cpu", torch.bfloat16, channels_last=False)
    assert first.ok and first.dtype == "bfloat16" and first.seconds >= 0
    assert selfcheck.check("silog_stats", "cpu", torch.bfloat16, channels_last=False) is first
    with pytest.raises(ValueError, match="unknown fused op 'nope'"):
        selfcheck.check("nope", "cpu", torch.float32, False)


def test_compare_rule():
    ref64 = [torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)]
    same = [ref64[0].to(torch.bfloat16)]
    assert selfcheck.compare(same, same, ref64, torch.bfloat16) is None
    assert "max abs diff" in selfcheck.compare([same[0] + 1], same, ref64, torch.bfloat16)
    nan = torch.tensor([1.0, float("nan"), 4.0])
    assert "non-finite" in selfcheck.compare([nan], [ref64[0].float()], ref64, torch.float32)
    assert "shape" in selfcheck.compare([nan[:2]], [nan], ref64, torch.float32)


def test_concurrent_first_calls_probe_once(checked, monkeypatch):
    import threading

    calls = _patch(monkeypatch, "sigmoid_gate", "forward", "spy")
    x = torch.randn(2, 4, 3, 3)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(selfcheck.passes("sigmoid_gate", x))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert answers == [True] * 4 and len(calls) == 1 and len(selfcheck.results()) == 1


def test_an_op_called_inside_a_probe_is_not_checked_again(checked, monkeypatch):
    module, name, _ = LAUNCHERS["sigmoid_gate"]
    original = getattr(module, name)
    inner = []

    def calls_the_op(f, a, r=None, **kwargs):
        inner.append(selfcheck.passes("sigmoid_gate", f.double()))  # another key, re-entrant: trusted, no probe
        return original(f, a, r, **kwargs)

    monkeypatch.setattr(module, name, calls_the_op)
    assert selfcheck.passes("sigmoid_gate", torch.randn(2, 4, 3, 3))
    assert inner == [True] and [r.dtype for r in selfcheck.results()] == ["float32"]
