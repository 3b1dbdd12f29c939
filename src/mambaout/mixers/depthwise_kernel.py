"""The weight gradient of a stride-1 depthwise conv, for `depthwise_grad.py` (imported on first use, so that importing
a model does not import numba):

    dW[c, i, j] = sum over b, h, w of grad[b, c, h, w] * x[b, c, h + i - pad_h, w + j - pad_w]   (in-bounds taps)

on channels-last copies of x and grad. One task per batch element sums into its own partials, which the caller adds
in batch order (`fused.sum_in_order`): the tasks depend on the shapes only and each sums in a fixed order, so the
result has the same bits at any thread count, and the serial build (one thread, short calls: no pool to start) the
same bits as the threaded one.
"""

import numpy as np
from numba import njit, prange

from mambaout.ssm.fused import ERROR_MODEL, FASTMATH, serial_twin


@njit(parallel=True, cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def weight_grad_kernel(x, grad, pad_h, pad_w, parts):
    """x (B, H, W·C), grad (B, Ho, Wo, C), channels-last float32; parts (B, kh, kw·C) zeros: each batch element's sums.

    For one output position and kernel row, the taps j of the in-bounds columns read a contiguous run of x's row
    (W·C floats: columns, then channels) and update a contiguous run of the accumulator's row (kw·C): one loop of
    up to kw·C elements against the output's gradient repeated kw times (`tiled`), so even 16 channels fill vectors.
    """
    batch, height = x.shape[0], x.shape[1]
    out_h, out_w, channels = grad.shape[1], grad.shape[2], grad.shape[3]
    width = x.shape[2] // channels
    kh, kw = parts.shape[1], parts.shape[2] // channels
    for b in prange(batch):
        acc = parts[b]
        tiled = np.empty(kw * channels, np.float32)
        for h in range(out_h):
            i0, i1 = max(0, pad_h - h), min(kh, height + pad_h - h)  # rows h + i - pad_h inside the map
            for w in range(out_w):
                j0, j1 = max(0, pad_w - w), min(kw, width + pad_w - w)
                if i0 >= i1 or j0 >= j1:
                    continue
                g = grad[b, h, w]
                for j in range(j0, j1):
                    for c in range(channels):
                        tiled[j * channels + c] = g[c]
                start, stop = j0 * channels, j1 * channels
                first = (w + j0 - pad_w) * channels  # x's element of tap (i, j0), channel 0
                g_run = tiled[start:stop]
                for i in range(i0, i1):
                    x_run = x[b, h + i - pad_h, first : first + stop - start]
                    a_run = acc[i, start:stop]
                    for t in range(stop - start):
                        a_run[t] += x_run[t] * g_run[t]


weight_grad_serial = serial_twin(weight_grad_kernel, "weight_grad_serial")
