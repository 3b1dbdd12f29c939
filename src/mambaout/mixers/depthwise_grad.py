"""A depthwise convolution whose weight gradient is a numba kernel: the part of oneDNN's CPU backward that is slow.

PyTorch's CPU backward of a depthwise conv (oneDNN's, channels-last or not, AVX2 or AVX-512) spends most of its time
in the weight and bias gradients: on a 2-core Intel Xeon, one thread, PyTorch, oneDNN and MKL capped at AVX2, the
weight gradient alone took 2.8 ms at (batch 64, 32 channels, 4 x 4 map, 7 x 7 kernel), 0.6 G multiply-adds a second,
where the forward took 0.09 ms. `depthwise_conv` keeps oneDNN's forward and input gradient (the same kernels, the same
bits), takes the weight gradient from `depthwise_kernel.py` (4-8 G multiply-adds a second there) and the bias gradient
as a sum; both differ from oneDNN's in rounding only (float32 sums in another order; tested against it).

Forward + backward, new / oneDNN's time, same machine and settings, interleaved medians (batch, channels, map,
kernel): one thread 0.87 (64, 16, 8 x 8, 7 x 7), 0.22 (64, 32, 4 x 4, 7 x 7), 0.27 (64, 64, 2 x 2, 3 x 3), 0.21 (64,
96, 1 x 1, 3 x 3), 0.66 (64, 64, 8 x 8, 7 x 7), 0.61 (16, 48, 56 x 56, 7 x 7), 0.57 (16, 192, 14 x 14, 7 x 7); two
threads 0.19-0.37 on the three smallest maps, 0.83-0.86 on the two largest, but 1.41 at (64, 16, 8 x 8) and 1.06 at
(64, 64, 8 x 8). So the kernel runs on one thread (every run of the study) and, at any thread count, on maps of at
most `_SMALL_MAP` positions; elsewhere PyTorch's whole conv. A training step of the study's digits models (batch 64,
one thread): 0.81x the time with the gated conv, 0.83x with attention, 0.91x with the SSM. The sequences' causal
conv1d keeps oneDNN's backward: in a selective-copying step the kernel saved nothing measurable (0.96-1.03x).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from mambaout.engine.runtime import exporting

# Maps this small take the kernel at any thread count: there oneDNN's backward costs 3-5x its forward more than the
# kernel, threads or not (4 x 4, 2 x 2 and 1 x 1 maps, below).
_SMALL_MAP = 16


@torch.library.custom_op("mambaout::depthwise_weight_grad", mutates_args=(), device_types="cpu")
def depthwise_weight_grad(
    x: torch.Tensor, grad: torch.Tensor, kernel_h: int, kernel_w: int, pad_h: int, pad_w: int
) -> torch.Tensor:
    """The weight gradient (C, 1, kernel_h, kernel_w) of a stride-1 depthwise conv of x (B, C, H, W) with zero padding
    (pad_h, pad_w), from the output's gradient (B, C, Ho, Wo); float32.

    Example:
        >>> x, g = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
        >>> depthwise_weight_grad(x, g, 3, 3, 1, 1).shape
        torch.Size([4, 1, 3, 3])
    """
    from mambaout.mixers.depthwise_kernel import weight_grad_kernel, weight_grad_serial  # numba: on first use only
    from mambaout.ssm.fused import choose_build, sum_in_order

    batch, channels = x.shape[:2]
    x_cl = x.detach().permute(0, 2, 3, 1).contiguous()
    g_cl = grad.detach().permute(0, 2, 3, 1).contiguous()
    parts = x.new_zeros(batch, kernel_h, kernel_w * channels)
    work = g_cl.numel() * kernel_h * kernel_w
    kernel = choose_build(weight_grad_kernel, weight_grad_serial, work)
    kernel(x_cl.flatten(2).numpy(), g_cl.numpy(), pad_h, pad_w, parts.numpy())
    out = sum_in_order(parts)  # the batch elements' partials in batch order
    return out.view(kernel_h, kernel_w, channels).permute(2, 0, 1).unsqueeze(1).contiguous()


@depthwise_weight_grad.register_fake
def _(x, grad, kernel_h, kernel_w, pad_h, pad_w):
    return x.new_empty(x.shape[1], 1, kernel_h, kernel_w)


class _DepthwiseConv(torch.autograd.Function):
    """oneDNN's forward and input gradient, the weight gradient of `depthwise_weight_grad`, the bias's as a sum."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=padding, groups=weight.shape[0])

    @staticmethod
    @once_differentiable  # a second derivative needs PyTorch's conv: it says so instead of returning a wrong one
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        (pad_h, pad_w), channels = ctx.padding, weight.shape[0]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [pad_h, pad_w], [1, 1], False, [0, 0], channels, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad, weight.shape[2], weight.shape[3], pad_h, pad_w)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def depthwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]
) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=padding, groups=C)` for a depthwise (C, 1, kh, kw) weight, stride 1: the same
    forward, and when the weight's gradient is needed on CPU in float32, the backward above (else PyTorch's whole).

    Example:
        >>> w = torch.randn(8, 1, 3, 3, requires_grad=True)
        >>> y = depthwise_conv(torch.randn(2, 8, 6, 6), w, None, (1, 1))
        >>> y.sum().backward(); w.grad.shape
        torch.Size([8, 1, 3, 3])
    """
    if not torch.jit.is_scripting():  # TorchScript compiles neither the test nor the autograd Function
        if _fast_backward(x, weight):
            return _DepthwiseConv.apply(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding, groups=weight.shape[0])


def _fast_backward(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """On CPU in float32 when the weight's gradient is needed (and numba imports), outside exporters, autocast and
    torch.compile, for a non-empty batch; on one
    thread (the study's runs), or on maps of at most `_SMALL_MAP` positions at any thread count (see the module's
    measurements: with more threads oneDNN's threaded backward wins on larger maps)."""
    return (
        (torch.get_num_threads() == 1 or x.shape[-2] * x.shape[-1] <= _SMALL_MAP)
        and torch.is_grad_enabled()
        and weight.requires_grad
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.shape[0] > 0
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not exporting()
        and _kernel_available()
    )


@functools.cache
def _kernel_available() -> bool:
    """Whether numba imports (it is a dependency, but a broken install should cost speed, not training)."""
    try:
        import mambaout.mixers.depthwise_kernel  # noqa: F401
    except ImportError:
        return False
    return True


def compile_kernels() -> None:
    """Compile the serial build now (or load it from numba's cache), as `mambaout.ssm.fused.compile_kernels` does."""
    depthwise_weight_grad(torch.zeros(1, 8, 4, 4), torch.zeros(1, 8, 4, 4), 3, 3, 1, 1)
