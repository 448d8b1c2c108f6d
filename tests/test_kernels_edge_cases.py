"""Kernel edge cases: non-contiguous inputs, batch 1, 1x1 maps, fp16 range, mixed dtypes and
devices, and int64 offsets past 2**31 elements (through a sparse file, nothing that large is
allocated)."""
import pytest
import torch

from fastmtl.kernels.se_scale import se_scale_reference
from fastmtl.kernels.sigmoid_gate import sigmoid_gate_reference
from fastmtl.kernels.silog import silog_stats_reference

ops = torch.ops.fastmtl


pytestmark = pytest.mark.usefixtures("triton_mode")  # kernels through Triton (interpreter on CPU)


def se_weights(c, cr=3, dtype=torch.float32):
    return (torch.randn(cr, c, dtype=dtype), torch.randn(cr, dtype=dtype),
            torch.randn(c, cr, dtype=dtype), torch.randn(c, dtype=dtype))


def non_contiguous(shape):
    """A strided view: every other column of a wider tensor, channels permuted in memory."""
    n, c, h, w = shape
    return torch.randn(n, h, c, 2 * w).permute(0, 2, 1, 3)[..., ::2]


@pytest.mark.parametrize("shape", [(1, 5, 1, 1), (1, 7, 3, 5), (2, 6, 1, 9)])
def test_se_scale_batch1_1x1_and_strided(shape):
    x = non_contiguous(shape)
    identity = non_contiguous(shape)
    assert not x.is_contiguous()
    w = se_weights(shape[1])
    torch.testing.assert_close(ops.se_scale(x, *w, identity), se_scale_reference(x, *w, identity))
    torch.testing.assert_close(ops.se_scale(x, *w), se_scale_reference(x, *w))


@pytest.mark.parametrize("shape", [(1, 5, 1, 1), (1, 7, 3, 5), (3, 2, 1, 9)])
def test_sigmoid_gate_batch1_1x1_and_strided(shape):
    f, a, r = (non_contiguous(shape) for _ in range(3))
    torch.testing.assert_close(ops.sigmoid_gate(f, a, r), sigmoid_gate_reference(f, a, r))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 3, 5), (2, 1, 1, 7)])
def test_silog_batch1_1x1_and_strided(shape):
    pred = non_contiguous(shape).abs() + 1
    target = non_contiguous(shape).abs() + 1
    torch.testing.assert_close(ops.silog_stats(pred, target), silog_stats_reference(pred, target))


def test_aspp_batch1_1x1():
    branches = [torch.randn(1, 4, 1, 1) for _ in range(4)]
    weight, bias = torch.randn(3, 16), torch.randn(1, 3)
    got = ops.aspp_project(branches, weight, bias, None, None, True)
    expected = torch.relu(torch.einsum("ok,nkhw->nohw", weight, torch.cat(branches, 1)) + bias[:, :, None, None])
    torch.testing.assert_close(got, expected)


def test_fp16_extremes_do_not_overflow():
    # values near the fp16 maximum: a fp16 accumulation of the spatial mean or of d^2 would overflow
    x = torch.full((1, 4, 8, 8), 60000.0, dtype=torch.float16)
    w = se_weights(4, dtype=torch.float32)
    assert torch.isfinite(ops.se_scale(x, *w)).all()
    f = torch.full((1, 2, 4, 4), 60000.0, dtype=torch.float16)
    a = torch.full((1, 2, 4, 4), -60000.0, dtype=torch.float16)
    assert torch.equal(ops.sigmoid_gate(f, a), torch.zeros_like(f))
    log_pred = torch.full((1, 1, 64, 64), -11.0, dtype=torch.float16)  # d ~ 16 per pixel, sum d^2 ~ 1e6
    stats = ops.silog_stats(log_pred, torch.full((1, 1, 64, 64), 1e5), None, None, 0.01, True)
    assert torch.isfinite(stats).all() and stats[0, 1] > 65504


def test_mixed_devices_are_a_clear_error():
    f = torch.randn(1, 2, 3, 3)
    with pytest.raises((ValueError, RuntimeError), match="a is on meta"):
        ops.sigmoid_gate(f, torch.empty(1, 2, 3, 3, device="meta"))


def test_mixed_dtypes_are_a_clear_error():
    f = torch.randn(1, 2, 3, 3)
    with pytest.raises(TypeError, match="a is torch.float16"):
        ops.sigmoid_gate(f, torch.randn(1, 2, 3, 3, dtype=torch.float16))
    with pytest.raises(TypeError, match="int"):
        ops.sigmoid_gate(f.long(), f.long())


def test_offsets_past_2_31_elements(tmp_path):
    """A (2, 1, H, W) fp16 view whose second image starts past element 2**31 of a sparse,
    file-backed buffer: 32-bit offsets would read and write the wrong memory."""
    n_elem = 2 ** 31 + 4096
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as fh:  # a sparse 4 GiB file: no disk or memory is used until touched
        fh.truncate(n_elem * 2)
    storage = torch.from_file(str(path), shared=True, size=n_elem, dtype=torch.float16)
    h, w = 8, 16
    second = 2 ** 31 + 128  # element offset of the second image
    view = storage.as_strided((2, 1, h, w), (second, h * w, w, 1))
    small = torch.rand(2, 1, h, w, dtype=torch.float16) + 0.5
    view.copy_(small)
    f = view
    a = view
    got = ops.sigmoid_gate(f, a)
    torch.testing.assert_close(got, sigmoid_gate_reference(small, small))
    pred_log = torch.zeros(2, 1, h, w, dtype=torch.float16)
    target = storage.as_strided((2, 1, h, w), (second, h * w, w, 1))
    torch.testing.assert_close(ops.silog_stats(pred_log, target, None, None, 0.01, True),
                               silog_stats_reference(pred_log, small, None, None, 0.01, True))
