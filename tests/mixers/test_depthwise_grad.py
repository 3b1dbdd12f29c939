"""The depthwise conv's backward: oneDNN's forward and input gradient kept bit for bit, the weight gradient of the
numba kernel within float32 rounding of PyTorch's, the same bits at any thread count, and PyTorch's whole conv
wherever the kernel does not apply."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from mambaout.mixers.depthwise_grad import _fast_backward, depthwise_conv, depthwise_weight_grad


@contextlib.contextmanager
def threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# (batch, channels, rows, cols, kernel rows, kernel cols, padding rows, padding cols): MambaOut's 7 x 7 on a map, the
# kernel cropped to 3 x 3 on 2 x 2 and 1 x 1 maps (digits' last stages), a 1-D causal kernel on a padded sequence,
# kernels and paddings that differ per axis
SHAPES = [
    (8, 16, 8, 8, 7, 7, 3, 3),
    (8, 32, 4, 4, 7, 7, 3, 3),
    (8, 64, 2, 2, 3, 3, 1, 1),
    (8, 96, 1, 1, 3, 3, 1, 1),
    (3, 5, 1, 39, 1, 4, 0, 0),
    (2, 7, 9, 6, 5, 3, 2, 1),
    (2, 3, 1, 2, 1, 7, 0, 3),
]


def _conv_and_grads(conv, x0, w0, b0, grad, padding):
    x, w, b = (t.clone().requires_grad_(True) for t in (x0, w0, b0))
    y = conv(x, w, b, padding)
    return (y, *torch.autograd.grad(y, (x, w, b), grad))


@pytest.mark.parametrize("batch, channels, rows, cols, kh, kw, ph, pw", SHAPES)
def test_the_backward_keeps_onednns_forward_and_input_gradient_and_rounds_the_weights_like_it(
    batch, channels, rows, cols, kh, kw, ph, pw
):
    torch.manual_seed(0)
    x0 = torch.randn(batch, rows, cols, channels).permute(0, 3, 1, 2)  # channels-last, as the blocks give it
    w0, b0 = torch.randn(channels, 1, kh, kw), torch.randn(channels)
    grad = torch.randn(batch, rows + 2 * ph - kh + 1, cols + 2 * pw - kw + 1, channels).permute(0, 3, 1, 2)

    def reference(x, w, b, padding):
        return F.conv2d(x, w, b, padding=padding, groups=w.shape[0])

    with threads(1):
        assert _fast_backward(x0, w0.requires_grad_(True))
        y, dx, dw, db = _conv_and_grads(depthwise_conv, x0, w0, b0, grad, (ph, pw))
        y_ref, dx_ref, dw_ref, db_ref = _conv_and_grads(reference, x0, w0, b0, grad, (ph, pw))
    assert torch.equal(y, y_ref) and torch.equal(dx, dx_ref)
    torch.testing.assert_close(dw, dw_ref, rtol=1e-5, atol=1e-5 * dw_ref.abs().max().item())
    torch.testing.assert_close(db, db_ref, rtol=1e-5, atol=1e-5 * db_ref.abs().max().item())


def test_the_weight_gradient_has_the_same_bits_on_one_thread_and_on_two():
    torch.manual_seed(0)
    x, grad = torch.randn(16, 48, 28, 28), torch.randn(16, 48, 28, 28)  # 29 M multiply-adds: the threaded build
    results = []
    for n in (1, 2):
        with threads(n):
            results.append(depthwise_weight_grad(x, grad, 7, 7, 3, 3))
    assert torch.equal(*results)


def test_pytorchs_whole_conv_runs_where_the_kernel_does_not_apply():
    w = torch.randn(8, 1, 3, 3, requires_grad=True)
    small, large = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 8, 8)
    with threads(1):
        assert _fast_backward(large, w)
        assert not _fast_backward(large, w.detach())  # no weight gradient wanted
        assert not _fast_backward(large.double(), w.double())
        assert not _fast_backward(large[:0], w)  # an empty batch: PyTorch's zeros
        with torch.no_grad():
            assert not _fast_backward(large, w)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not _fast_backward(large, w)
    with threads(2):  # on more threads only the smallest maps, where oneDNN's threaded backward still loses
        assert _fast_backward(small, w) and not _fast_backward(large, w)
