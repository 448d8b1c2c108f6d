"""fastmtl.layers.upsample_to: bilinear resize in the autocast dtype under autocast (no fp32 copies)."""
import torch
import torch.nn.functional as F

from fastmtl.layers import upsample_to


def _x(memory_format=torch.contiguous_format):
    return torch.randn(2, 5, 7, 9, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=memory_format)


def test_upsample_without_autocast_is_interpolate():
    x = _x()
    out = upsample_to(x, (14, 18))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.interpolate(x, size=(14, 18), mode="bilinear", align_corners=False), rtol=0, atol=0)


def test_upsample_under_bf16_autocast_runs_in_bf16_and_matches_fp32():
    x = _x()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = upsample_to(x, (14, 18))
    assert out.dtype == torch.bfloat16
    ref = F.interpolate(x, size=(14, 18), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.float(), ref, rtol=1.6e-2, atol=1e-2)


def test_upsample_gradient_under_autocast_reaches_fp32_input():
    x = _x().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        upsample_to(x, (14, 18)).float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    ref = x.detach().clone().requires_grad_()
    F.interpolate(ref, size=(14, 18), mode="bilinear", align_corners=False).sum().backward()
    torch.testing.assert_close(x.grad, ref.grad, rtol=1.6e-2, atol=2e-2)


def test_upsample_keeps_channels_last_and_same_size_is_identity():
    x = _x(torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = upsample_to(x, (14, 18))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert upsample_to(x, (7, 9)) is x
