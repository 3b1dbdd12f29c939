"""The local depthwise convolution every mixer starts from, for images or sequences, fully visible or causal.

On images (layout "2d", (B, H, W, C)) the fully visible form is MambaOut's kxk depthwise conv (bias, zero padding
k // 2). Its causal form keeps only the kernel taps that come earlier in raster order (rows above, and the left half
of the centre row including the centre: PixelCNN's mask), so output (r, c) depends on inputs (r', c') <= (r, c) in
raster order. On sequences (layout "1d", (B, L, C)) the causal form pads k - 1 zeros on the left (Mamba's conv1d),
the fully visible one k // 2 on the left and k - 1 - k // 2 on the right.

Streaming (causal "1d" only): the state is the last k - 1 inputs (zeros at the start: the left padding).
`forward(x, state)` runs a chunk of a stream and returns (y, the next state); `step(x_t, state)` one token. Chunks
of any length, steps, and one `forward(x)` over the whole sequence give the same outputs.

A masked 2D conv is counted by FlopCounterMode as the full kxk kernel; the masked taps are zeros, not skipped. On
maps with fewer than k // 2 + 1 rows or columns the taps that only ever meet padding are not run, and not counted
(`depthwise_conv2d`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mambaout.engine.runtime import exporting
from mambaout.mixers.depthwise_grad import depthwise_conv

LAYOUTS = ("2d", "1d")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be '2d' (B, H, W, C) or '1d' (B, L, C), got {layout!r}")
    return layout


def raster_causal_mask(kernel_size: int) -> torch.Tensor:
    """(k, k) mask of ones on the taps at or before the centre in raster order (rows above, then the left half)."""
    mask = torch.zeros(kernel_size, kernel_size)
    centre = kernel_size // 2
    mask[:centre] = 1
    mask[centre, : centre + 1] = 1
    return mask


@torch.fx.wrap  # a leaf for torch.fx: the crop reads the input's shape
def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise conv of x (B, C, H, W) with an odd kxk kernel and zero padding k // 2, the taps that can only ever meet
    padding left out: on a map of H rows, taps more than H - 1 rows from the centre read zeros for every output (and
    likewise for columns), so the kernel is cropped to a radius of min(k // 2, max(H - 1, 1)) and padded as much.

    The same outputs and gradients (the cut taps' weight gradient is zero either way); what changes is the work. The
    study's digits reach 2 x 2 and 1 x 1 maps in their last stages, where oneDNN's depthwise backward of the full 7 x 7
    kernel took 3.4-4.9 ms a call and the cropped one 1.4-1.8 ms (batch 64, one thread, AVX2 settings, 2-core Xeon).
    The radius stays at least 1: a 1 x 1 kernel takes another oneDNN algorithm, whose weight gradient sums in another
    order; cropped to 3 x 3 every output and gradient had the same bits as with the full kernel on the shapes measured.

    Example:
        >>> w = torch.randn(8, 1, 7, 7)
        >>> x = torch.randn(2, 8, 2, 2)
        >>> torch.allclose(depthwise_conv2d(x, w, None), F.conv2d(x, w, padding=3, groups=8))
        True
    """
    radius = rows = cols = weight.shape[-1] // 2
    # while an exporter records the call, the whole kernel: the graph may run at other sizes, and TorchScript's ONNX
    # exporter cannot give a sliced kernel a shape
    if not exporting():
        rows = min(radius, max(x.shape[-2] - 1, 1))
        cols = min(radius, max(x.shape[-1] - 1, 1))
    if rows != radius or cols != radius:
        weight = weight[:, :, radius - rows : radius + rows + 1, radius - cols : radius + cols + 1]
    return depthwise_conv(x, weight, bias, (rows, cols))


class LocalConv(nn.Module):
    """Depthwise conv on channels-last input: (B, H, W, C) for layout "2d", (B, L, C) for "1d".

    Example:
        >>> conv = LocalConv(32, kernel_size=7, layout="1d", causal=True)
        >>> conv(torch.randn(2, 100, 32)).shape
        torch.Size([2, 100, 32])
        >>> y, state = conv(torch.randn(2, 60, 32), conv.init_state(2))  # a stream, chunk by chunk
        >>> y, state = conv(torch.randn(2, 40, 32), state)  # state: the last 6 inputs, (2, 32, 6)
    """

    def __init__(self, dim: int, kernel_size: int = 7, layout: str = "2d", causal: bool = False):
        super().__init__()
        if kernel_size < 1 or (kernel_size % 2 == 0 and layout == "2d"):
            raise ValueError(f"kernel_size on images must be odd (a centred kernel), got {kernel_size}")
        self.layout = check_layout(layout)
        self.causal = causal
        self.kernel_size = kernel_size
        conv_cls = nn.Conv2d if layout == "2d" else nn.Conv1d
        self.conv = conv_cls(dim, dim, kernel_size, padding=0 if layout == "1d" else kernel_size // 2, groups=dim)
        if layout == "2d" and causal:
            self.register_buffer("mask", raster_causal_mask(kernel_size), persistent=False)

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, H, W, C) or (B, L, C) -> the same shape; with `state` (causal "1d"): -> (y, the next state)."""
        if state is not None:
            return self._forward_chunk(x, state)
        if self.layout == "2d":
            x = x.permute(0, 3, 1, 2)
            w = self.conv.weight * self.mask if self.causal else self.conv.weight
            return depthwise_conv2d(x, w, self.conv.bias).permute(0, 2, 3, 1)
        k = self.kernel_size
        pad = (k - 1, 0) if self.causal else (k // 2, k - 1 - k // 2)
        return self._conv1d(F.pad(x, (0, 0, *pad)))

    def _conv1d(self, x: torch.Tensor) -> torch.Tensor:
        """The unpadded depthwise conv of a padded (B, L + k - 1, C) sequence -> (B, L, C), run as a 2-D conv on a
        channels-last (B, C, 1, L + k - 1) view: oneDNN then takes its depthwise kernels for NHWC, where the
        (B, C, L) layout of conv1d gets its generic GEMM backward (forward + backward measured 1.5-1.9x faster at
        the study's sizes, one thread, 2-core Xeon), and no transpose is copied. It reads `self.conv`'s weight and
        bias directly, as images do (`depthwise_conv2d`): hooks on that conv do not run."""
        x = x.unsqueeze(1).permute(0, 3, 1, 2)  # (B, C, 1, L'), channels-last strides: a view
        y = F.conv2d(x, self.conv.weight.unsqueeze(2), self.conv.bias, groups=self.conv.groups)
        return y.squeeze(2).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}, causal={self.causal}"

    # -- streaming (layout "1d", causal): a chunk or one token at a time -------------------------------------------
    def _check_streams(self) -> None:
        if self.layout != "1d" or not self.causal:
            raise ValueError("only the causal 1-D conv streams (layout='1d', causal=True)")

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
        """The last k - 1 inputs, zeros at the start (the left padding of `forward`): (batch, C, k - 1)."""
        self._check_streams()
        w = self.conv.weight
        return torch.zeros(batch, w.shape[0], self.kernel_size - 1, device=device or w.device, dtype=dtype or w.dtype)

    def _forward_chunk(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (batch, L, C) continuing the stream that left `state` (batch, C, k - 1) -> (y, the next state)."""
        self._check_streams()
        inputs = torch.cat((state.to(x.dtype).transpose(1, 2), x), dim=1)  # the previous inputs pad on the left
        return self._conv1d(inputs), inputs[:, inputs.shape[1] - (self.kernel_size - 1) :].transpose(1, 2)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token x (batch, C) -> (y (batch, C), the new state); stepping through a sequence gives `forward`."""
        window = torch.cat((state, x[:, :, None]), dim=-1)  # (batch, C, k), oldest first, as the kernel's taps
        y = (window * self.conv.weight[:, 0]).sum(-1) + self.conv.bias
        return y, window[:, :, 1:]
