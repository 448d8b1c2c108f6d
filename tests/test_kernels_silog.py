"""fastmtl::silog_stats (Triton through the interpreter), silog() and SILogLoss."""
import math

import pytest
import torch

import fastmtl.kernels.silog as silog_mod
from fastmtl.kernels.silog import silog, silog_from_stats, silog_stats, silog_stats_backward
from fastmtl.nn import SILogLoss

N, H, W = 3, 5, 7
MIN_D, MAX_D, EPS = 4.0, 80.0, 0.01


pytestmark = pytest.mark.usefixtures("triton_mode")  # kernels through Triton (interpreter on CPU)


def _data(dtype=torch.float32, n=N, h=H, w=W, four_d=True):
    """Predictions in metres (some outside [MIN_D, MAX_D]) and targets with invalid pixels:
    zeros, negatives, NaN, inf, and image 1 with no valid pixel at all."""
    pred = torch.rand(n, h, w, dtype=torch.float64) * 100 + 0.5
    target = torch.rand(n, h, w, dtype=torch.float64) * 90 + 0.001
    target[0, 0, :3] = 0
    target[0, 1, 1] = -2
    target[-1, 2, 2] = float("nan")
    target[-1, 0, 0] = float("inf")
    target[1] = 0
    if four_d:
        pred, target = pred[:, None], target[:, None]
    return pred.to(dtype), target.to(dtype)


def _textbook(pred, target, lam=1.0, log_input=False, min_depth=MIN_D, max_depth=MAX_D, eps=EPS, root=True, sqrt_eps=0.0, scale=100.0):
    """The seed report's recipe, image by image, with boolean indexing (fp64, differentiable)."""
    values = []
    for p, t in zip(pred.double().flatten(1), target.double().flatten(1)):
        valid = torch.isfinite(t) & (t > 0)
        if not valid.any():
            values.append(torch.tensor(math.nan, dtype=torch.float64))
            continue
        p = p[valid].exp() if log_input else p[valid]
        p = p.clamp(min_depth, max_depth).clamp_min(eps)
        d = torch.log(t[valid].clamp_min(eps)) - torch.log(p)
        v = ((d * d).mean() - lam * d.mean() ** 2).clamp_min(0)
        values.append(scale * (torch.sqrt(v + sqrt_eps) if root else v))
    return torch.stack(values)


def _textbook_loss(pred, target, **kw):
    values = _textbook(pred, target, **kw)
    return values[~values.isnan()].mean()


@pytest.mark.parametrize("four_d", [True, False], ids=["n1hw", "nhw"])
@pytest.mark.parametrize("log_input", [False, True], ids=["metres", "log"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_metric_matches_the_textbook_recipe(dtype, log_input, four_d):
    pred, target = _data(dtype, four_d=four_d)
    if log_input:
        pred = pred.log()
    got = silog(pred, target, log_input=log_input, min_depth=MIN_D, max_depth=MAX_D, eps=EPS)
    want = _textbook(pred, target, log_input=log_input)
    assert got.shape == (N,) and got[1].isnan() and want[1].isnan()
    torch.testing.assert_close(got.double(), want, rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("root, lam", [(True, 1.0), (True, 0.85), (False, 1.0)])
@pytest.mark.parametrize("log_input", [False, True], ids=["metres", "log"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_and_its_gradient_match_the_textbook_recipe(dtype, log_input, root, lam):
    pred, target = _data(dtype)
    if log_input:
        pred = pred.log()
    pred.requires_grad_()
    loss_fn = SILogLoss(lam=lam, log_input=log_input, min_depth=MIN_D, max_depth=MAX_D, eps=EPS, root=root, scale=100.0)
    loss = loss_fn(pred, target)
    (grad,) = torch.autograd.grad(loss, pred)
    p64 = pred.detach().double().requires_grad_()
    want = _textbook_loss(p64, target, lam=lam, log_input=log_input, root=root, sqrt_eps=1e-8)
    (want_grad,) = torch.autograd.grad(want, p64)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss.double(), want, **tol)
    assert grad.dtype == dtype and grad.shape == pred.shape
    torch.testing.assert_close(grad.double(), want_grad, **tol)
    assert grad[1].abs().sum() == 0  # the image without valid pixels gets no gradient


@pytest.mark.parametrize("log_input", [False, True], ids=["metres", "log"])
def test_gradcheck_fp64_through_triton(log_input):
    pred = torch.rand(2, 1, 3, 4, dtype=torch.float64) * 60 + 10  # inside the clamp range
    target = torch.rand(2, 1, 3, 4, dtype=torch.float64) * 60 + 1
    target[0, 0, 0, 0] = 0
    pred = (pred.log() if log_input else pred).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: silog_stats(p, target, MIN_D, MAX_D, EPS, log_input), (pred,))


@pytest.mark.parametrize("log_input", [False, True], ids=["metres", "log"])
def test_small_blocks_many_chunks_into_poisoned_buffer(log_input):
    pred, target = _data(torch.float64, h=9, w=13)
    if log_input:
        pred = pred.log()
    args = (pred, target, MIN_D, MAX_D, EPS, log_input)
    stats = silog_mod.silog_stats_triton(*args, block=16, chunks=3)
    torch.testing.assert_close(stats, silog_mod.silog_stats_reference(*args))
    g = torch.randn(N, 3, dtype=torch.float64)
    dpred = silog_mod.silog_stats_backward_triton(g, *args, dpred=torch.full_like(pred, float("nan")), block=16)
    torch.testing.assert_close(dpred, silog_mod.silog_stats_backward_reference(g, *args))


def test_layouts_and_a_wider_target_dtype():
    """channels_last (N, 1, H, W), an unmergeable strided slice, bf16 pred with fp32 target."""
    pred, target = _data(torch.float64)
    want = silog_stats(pred, target, MIN_D, MAX_D, EPS)
    cl = silog_stats(pred.to(memory_format=torch.channels_last), target.to(memory_format=torch.channels_last), MIN_D, MAX_D, EPS)
    torch.testing.assert_close(cl, want)
    wide = torch.zeros(N, 1, H, 2 * W, dtype=torch.float64)
    wide[..., ::2] = pred
    torch.testing.assert_close(silog_stats(wide[..., ::2], target, MIN_D, MAX_D, EPS), want)
    mixed = silog_stats(pred.bfloat16(), target.float(), MIN_D, MAX_D, EPS)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed.double(), silog_stats(pred.bfloat16().double(), target, MIN_D, MAX_D, EPS), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_error_at_most_twice_torch_same_dtype(dtype):
    """Per-image metric and loss gradient: |fused - ref64| <= 2 |textbook_same_dtype - ref64| + atol."""
    pred, target = _data(dtype)
    pred.requires_grad_()
    loss = SILogLoss(min_depth=MIN_D, max_depth=MAX_D, eps=EPS, scale=100.0)(pred, target)
    (grad,) = torch.autograd.grad(loss, pred)
    p_same = pred.detach().clone().requires_grad_()
    same_values = []
    for p, t in zip(p_same, target):  # the textbook recipe in the low precision dtype
        valid = torch.isfinite(t) & (t > 0)
        if valid.any():
            d = torch.log(t[valid].clamp_min(EPS)) - torch.log(p[valid].clamp(MIN_D, MAX_D).clamp_min(EPS))
            same_values.append(100 * torch.sqrt(((d * d).mean() - d.mean() ** 2).clamp_min(0) + 1e-8))
    same = torch.stack(same_values).mean()
    (same_grad,) = torch.autograd.grad(same, p_same)
    p64 = pred.detach().double().requires_grad_()
    ref = _textbook_loss(p64, target, sqrt_eps=1e-8)
    (ref_grad,) = torch.autograd.grad(ref, p64)
    atol = 1e-3 if dtype == torch.float16 else 1e-2
    assert (loss.double() - ref).abs() <= 2 * (same.double() - ref).abs() + atol * ref.abs()
    assert grad.dtype == dtype
    err, err_same = (grad.double() - ref_grad).abs().max(), (same_grad.double() - ref_grad).abs().max()
    assert err <= 2 * err_same + atol * ref_grad.abs().max()


def test_loss_without_any_valid_pixel_is_a_connected_zero():
    pred = torch.rand(2, 1, 3, 4, requires_grad=True)
    loss = SILogLoss()(pred, torch.zeros(2, 1, 3, 4))
    loss.backward()
    assert loss.item() == 0 and pred.grad is not None and pred.grad.abs().sum() == 0


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_perfect_and_one_pixel_images_give_finite_gradients(lam):
    target = torch.rand(3, 1, 4, 4) * 50 + 5
    pred = (target * 2).requires_grad_()  # scale-invariant: d is constant, v ~ 0 for lam=1
    target[2] = 0
    target[2, 0, 1, 1] = 7.0  # one valid pixel: v = (1 - lam) d^2
    loss = SILogLoss(lam=lam)(pred, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_silog_from_stats_values():
    stats = torch.tensor([[2.0, 3.0, 4.0], [0.0, 0.0, 0.0]], dtype=torch.float64)  # mean d 0.5, mean d^2 0.75
    v = silog_from_stats(stats, lam=1.0)
    torch.testing.assert_close(v[0], torch.tensor(100 * math.sqrt(0.5), dtype=torch.float64))
    assert v[1].isnan()
    torch.testing.assert_close(silog_from_stats(stats, lam=0.0, root=False, scale=1.0)[0], torch.tensor(0.75, dtype=torch.float64))


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.rand(2, 1, 3, 4), torch.rand(2, 1, 3, 5)), "target must have pred's shape"),
        ((torch.rand(2, 2, 3, 4), torch.rand(2, 2, 3, 4)), r"pred must be \(N, 1, H, W\)"),
        ((torch.rand(3, 4), torch.rand(3, 4)), r"pred must be \(N, 1, H, W\)"),
        ((torch.rand(2, 3, 4), torch.rand(2, 3, 4, device="meta")), "target is on meta but pred is on cpu"),
        ((torch.rand(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.int32)), "target must be fp16"),
        ((torch.rand(2, 3, 4), torch.rand(2, 3, 4), None, None, -1.0), "eps must be >= 0"),
    ],
)
def test_invalid_inputs_raise_naming_the_argument(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        silog_stats(*args)


@pytest.mark.parametrize("log_input", [False, True], ids=["metres", "log"])
def test_opcheck_forward_and_backward_ops(log_input):
    pred, target = _data(torch.float32, n=2, h=3, w=4)
    pred = pred.log() if log_input else pred
    torch.library.opcheck(silog_stats, (pred.requires_grad_(), target, MIN_D, MAX_D, EPS, log_input))
    torch.library.opcheck(silog_stats_backward, (torch.randn(2, 3), pred.detach(), target, None, MAX_D, EPS, log_input))
