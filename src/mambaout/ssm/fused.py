"""Fused CPU selective scan: numba kernels that never store the (batch, D, L, N) states.

Layout is channels-last: one task owns a tile of W channels of one batch element (and one B/C group) and walks
along L; at each step the N x W states sit in L1 (or L2) and every inner loop runs over the W channels, so LLVM turns
it into long SIMD loops with no horizontal sums. The forward also keeps the states at every BLOCK-th step
(``checkpoints``, (batch, L / BLOCK, N, D): BLOCK times smaller than all states). The backward walks the blocks from
the end: it recomputes one block's states from its checkpoint into a BLOCK x N x W scratch, then runs the adjoint
recurrence through it. Tasks are parallel (``prange``); the sums over channels that the B and C gradients need go
to one partial buffer per channel tile, so no two threads ever write the same element.

Bitwise the same at any thread count: the tiling depends on the shapes only (``tile_width``), each task computes
its outputs alone in a fixed order, and the partial sums (per tile, per batch element) are added in index order.
Which thread runs a task changes nothing. Each kernel is compiled twice from the same source: with ``prange`` over
threads, and serially (``*_serial``) for short scans, since starting numba's thread pool costs ~0.13 ms a call, more
than a whole scan of the study's smallest sizes (``_PARALLEL_MIN``; on one thread ``_SERIAL_ONE_THREAD``); both give
the same bits.

Kernels take float32, C-contiguous arrays (``scan.py`` builds them): u, delta, z, out: (batch, L, D); delta_bias:
(D,); A_T: (N, D); B, C: (batch, G, L, N); D: (D,); h0, the state before the first step: (batch, D, N). The kernels
set up Δ = softplus(delta + delta_bias) (or delta + delta_bias) themselves, per step and tile, with a vectorised
log1p: with AVX-512 PyTorch's CPU softplus took 1.4 ms a call at selective copying's size (its log1p did not
vectorise), nearly the forward scan's own 1.7 ms, and inside the kernel Δ never makes a round trip through memory.
An absent D, delta_bias or h0 is passed as zeros and an absent z as an empty array, so each kernel compiles once per
machine (``cache=True``).
"""

import os
import platform
import types as pytypes
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numba
import numpy as np
import torch
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, prange, types
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic

# numba's default OpenMP layer fights torch's own OpenMP runtime for the same cores: measured here, one small scan
# (batch 64, D 96) took 3.5 + 16 ms forward + backward with "omp" and 0.9 + 1.8 ms with "workqueue". An explicit
# NUMBA_THREADING_LAYER still wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


def _target_features(environ: Mapping[str, str], host_features: str) -> str | None:
    """The instruction set numba compiles the kernels for (``numba.config.CPU_FEATURES``; None: numba's default).

    - ``NUMBA_CPU_FEATURES`` set: that, as numba reads it (None here).
    - ``NUMBA_CPU_NAME`` set alone: that CPU's own features (""). Numba would otherwise tune for the named CPU but
      keep the host's instructions: with ``NUMBA_CPU_NAME=haswell`` an AVX-512 host still emitted AVX-512 code, so
      a run meant to behave as an AVX2 CPU did not.
    - an AVX-512 host: its features plus 512-bit vectors. LLVM's tuning for AVX-512 Intel cores prefers 256-bit
      vectors ("prefer-256-bit"); the kernels' loops over channels are long and independent, and measured on a
      2-core Intel Xeon (Emerald Rapids) the scan ran 1.16-1.28x faster forward with zmm (docs/ssm.md).
    - otherwise None: the host's own (AVX2 hosts have no wider vectors to prefer).
    """
    if "NUMBA_CPU_FEATURES" in environ:
        return None
    if "NUMBA_CPU_NAME" in environ:
        return ""
    if "+avx512f" in host_features.split(","):
        return host_features + ",-prefer-256-bit"
    return None


if (_features := _target_features(os.environ, get_host_cpu_features())) is not None:
    numba.config.CPU_FEATURES = _features

_F = np.float32
# Reassociation lets LLVM vectorise the sums over channels, contraction lets it use FMA. Nothing that changes
# inf/nan semantics or swaps in approximate functions: the exps below are our own (_expf 1.5 ulp, _exp2 1.2 ulp).
FASTMATH = {"reassoc", "contract"}
# NumPy's error model for every kernel: Python's checks each float division for zero and raises, and that branch kept
# LLVM from vectorising the loops that divide (the gate's sigmoid: in the serial build the forward's gate loop ran
# scalar, 35 % of its time at selective copying's size). Nothing here divides by zero; the bits are the same.
ERROR_MODEL = "numpy"
# Steps between saved states: the backward's two scratch arrays are BLOCK x N x W floats (1 MB each at W = 256,
# N = 16), the checkpoints cost N / BLOCK floats per input element.
BLOCK = 64
# The widest tile: every row of the state loop and every step pay a fixed cost, which wider tiles spread over more
# channels (against 64, from 192 channels up: the forward 1.1-1.9x and the backward 1.2-1.6x as fast, docs/ssm.md "How
# the fused kernel works"); beyond 256 they gained at most 10 % more while the backward's scratch grew past 1 MB.
_MAX_TILE = 256
# Tiles are narrowed until there are this many tasks (or tiles reach 8 channels), so that small batches still keep
# several threads busy. A constant, not the thread count: the tiling decides the order of the dB/dC sums over
# channels, and the results must not change with the number of threads.
_MIN_TASKS = 4
# The backward's reverse loop (channels innermost, four arrays written) is guarded by runtime overlap checks, and with
# 8-lane (AVX2) vectors LLVM (numba 0.68) runs it scalar below 32 iterations. Narrower tiles run it on this many
# lanes, the extra ones zeros (which stay zeros). Measured on a 2-core Xeon, one thread, serial builds interleaved in
# one process: under the AVX2 settings the backward took 0.72-0.79x the time at 16 channels a tile (digits' first
# stage) and 0.61-0.67x at 24, the same at 64; compiled for its AVX-512 (16 lanes) the loop vectorises from 16 on, and
# padding to 32 took 1.1-1.4x the time, so there the minimum is 8 (the narrowest tile tile_width makes unless a group
# has fewer channels).
_VEC_MIN = 8 if _features is not None and "+avx512f" in _features.split(",") else 32
# LLVM's loop vectoriser also interleaves: each iteration of a vectorised loop runs IC vectors of VF lanes, and what is
# left of the loop runs scalar. On 8-lane (x86 AVX2) targets the forward kernels run faster compiled with two vectors an
# iteration than with the cost model's own choice (docs/ssm.md "How the fused kernel works"); with AVX-512 forcing it
# gained nothing. The forward has no sums across channels, so its results are the same bits either way; the backward's
# sums over channels are not, and it keeps the cost model's choice. The option is global to LLVM in the process: it is
# set only while the forward kernels compile (or load from numba's cache), then reset.
_FORWARD_INTERLEAVE = 2 if _VEC_MIN == 32 and platform.machine().lower() in ("x86_64", "amd64") else 0
# Below this many state updates (batch x L x D x N) a scan runs the serial build, at any thread count: starting the
# pool costs ~0.13 ms a call. On one thread, scans below _SERIAL_ONE_THREAD run it too: measured on a 2-core Xeon, one
# thread, the serial forward took 0.85-0.93x the parallel build's time at selective copying's size (batch 64, D 64,
# L 36) and 0.82-0.90x at digits' (64, 16, 64); from batch 8, D 192, L 1024 up the two builds were within the host's
# noise (0.9-1.1x either way), so larger scans keep the parallel build.
_PARALLEL_MIN = 1 << 20
_SERIAL_ONE_THREAD = 1 << 24


@intrinsic
def _bits_as_float32(typingctx, bits):
    """Reinterpret int32 bits as a float32 (what a C union does); numba has no scalar bitcast."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _float32_bits(typingctx, x):
    """The int32 bits of a float32 (the inverse of _bits_as_float32)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


_LOG2E = _F(1.4426950408889634)
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
# exp(r) ~ 1 + r + r^2 P(r) on |r| <= ln2 / 2, P of degree 4 fitted at Chebyshev nodes: 1e-8 relative in exact
# arithmetic, max 8.8e-8 (1.5 ulp) in float32 over [-87, 88]; one term shorter than Cephes' and as accurate.
_P0, _P1, _P2 = _F(1.3933643523720638e-3), _F(8.363175565467498e-3), _F(4.166646497610916e-2)
_P3, _P4 = _F(1.6666577003160285e-1), _F(5.000000013462222e-1)


@njit(inline="always", fastmath=FASTMATH)
def _expf(x):
    """float32 exp that LLVM can vectorise (libm's expf is a call it cannot), max error 1.5 ulp.

    Cephes' range reduction x = k ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial for exp(r), and 2^k built from
    exponent bits in two halves so that denormal results and overflow to inf both come out right.
    """
    xc = min(max(x, _F(-104.0)), _F(89.0))  # beyond these exp is 0 or inf in float32 anyway
    k = np.floor(xc * _LOG2E + _F(0.5))
    r = xc - k * _LN2_HI - k * _LN2_LO
    p = (((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4
    p = p * r * r + r + _F(1.0)
    ki = np.int32(k)
    k1 = ki >> np.int32(1)
    two_k1 = _bits_as_float32((k1 + np.int32(127)) << np.int32(23))
    two_k2 = _bits_as_float32((ki - k1 + np.int32(127)) << np.int32(23))
    return p * two_k1 * two_k2


# 2^f ~ 1 + f E(f) on |f| <= 1/2, E of degree 5 fitted to the relative error (Lawson's reweighting at Chebyshev
# nodes): 2e-9 in exact arithmetic, max 1.2 ulp in float32.
_E = (
    _F(1.5353361818583842e-4),
    _F(1.3398874445535308e-3),
    _F(9.618437358285933e-3),
    _F(5.550332471026549e-2),
    _F(2.4022647913619702e-1),
    _F(6.931472028551287e-1),
)


@njit(inline="always", fastmath=FASTMATH)
def _exp2(t):
    """2^t within 1.2 ulp for -126 <= t <= 127, and t clamped to that range (2^-126 to 2^127): the scan's decays.

    exp(Δ A) as 2^(Δ A log2 e), with A log2 e computed once per tile: a power of two needs no range reduction by
    ln 2, and k = rint(t) fits the exponent field whole, so 2^k is one integer add to the polynomial's bits. About 13
    vector instructions against _expf's 23, at the core of every state update; the price is the clamp: a decay is
    never exactly 0 (at least 2^-126 = 1.2e-38 where exp would underflow) and never inf. NaN stays NaN: the
    polynomial is NaN, and the float-to-int conversion of a NaN gives 0 after the shift on x86 (cvttps2dq's integer
    indefinite, 0x80000000) and on ARM (0).
    """
    tc = min(max(t, _F(-126.0)), _F(127.0))
    k = np.rint(tc)
    f = tc - k
    p = _E[0]
    for c in _E[1:]:
        p = p * f + c
    p = p * f + _F(1.0)
    return _bits_as_float32(_float32_bits(p) + (np.int32(k) << np.int32(23)))


@njit(inline="always", fastmath=FASTMATH)
def _sigmoid(x):
    return _F(1.0) / (_F(1.0) + _expf(-x))


_SQRT_HALF = _F(0.70710678118654752)
# log(1 + f) ~ f - f^2 / 2 + f^3 Q(f) on sqrt(1/2) - 1 <= f < sqrt(2) - 1: Cephes' logf polynomial
_Q = (
    _F(7.0376836292e-2),
    _F(-1.1514610310e-1),
    _F(1.1676998740e-1),
    _F(-1.2420140846e-1),
    _F(1.4249322787e-1),
    _F(-1.6668057665e-1),
    _F(2.0000714765e-1),
    _F(-2.4999993993e-1),
    _F(3.3333331174e-1),
)


@njit(inline="always", fastmath=FASTMATH)
def _log1pf(y):
    """log(1 + y) in float32 for 0 <= y < 2^127 that LLVM can vectorise, within 2 ulp: log of v = 1 + y (Cephes'
    logf: v = 2^k m, sqrt(1/2) <= m < sqrt(2), polynomial in m - 1) plus the rounding of 1 + y, (y - (v - 1)) / v."""
    v = _F(1.0) + y
    bits = _float32_bits(v)
    k = (bits >> np.int32(23)) - np.int32(126)  # v = 2^k m with 0.5 <= m < 1
    m = _bits_as_float32((bits & np.int32(0x007FFFFF)) | np.int32(0x3F000000))
    if m < _SQRT_HALF:
        k -= np.int32(1)
        f = m + m - _F(1.0)
    else:
        f = m - _F(1.0)
    kf = _F(k)
    f2 = f * f
    q = _Q[0]
    for c in _Q[1:]:
        q = q * f + c
    r = q * f * f2 + kf * _LN2_LO - _F(0.5) * f2
    return f + r + kf * _LN2_HI + (y - (v - _F(1.0))) / v


# Its own function, contraction alone: inlined into the kernels with their reassociation, the log1p came out in
# different bits in the serial and the parallel build (1.9e-6 apart), which must agree bit for bit. NumPy's error
# model (ERROR_MODEL): with Python's this loop took 6.6 against 0.5 ns an element.
@njit(cache=True, fastmath={"contract"}, error_model=ERROR_MODEL)
def _step_sizes(dt, dsp, delta_t, bias, softplus, slope=True):
    """dt[w] = Δ = softplus(delta_t[w] + bias[w]) as PyTorch's (threshold 20: x itself above it), or the sum alone;
    with ``slope`` also dsp[w] = dΔ / d delta (sigmoid, or 1), which only the backward needs."""
    for w in range(dt.shape[0]):
        x = delta_t[w] + bias[w]
        if softplus:
            e = _expf(min(x, _F(20.0)))
            dt[w] = x if x > _F(20.0) else _log1pf(e)
            if slope:
                dsp[w] = _F(1.0) if x > _F(20.0) else e / (e + _F(1.0))
        else:
            dt[w] = x
            if slope:
                dsp[w] = _F(1.0)


# Copies as explicit loops: numba's generic slice assignment costs ~0.1 us a call, which a short scan pays per step.
@njit(inline="always")
def _copy_rows(dst, src):
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]


@njit(inline="always")
def _gather(dst, state, d0):
    """dst (N, W) = state[d0 : d0 + W, :] transposed (state: (D, N))."""
    for n in range(dst.shape[0]):
        for w in range(dst.shape[1]):
            dst[n, w] = state[d0 + w, n]


@njit(inline="always")
def _log2e_tile(A_T, d0, w_n):
    """A_T[:, d0 : d0 + w_n] log2 e, C-contiguous (N, w_n): the decays' exponents come out in base 2 (_exp2)."""
    A2 = np.empty((A_T.shape[0], w_n), np.float32)
    for n in range(A_T.shape[0]):
        for w in range(w_n):
            A2[n, w] = A_T[n, d0 + w] * _LOG2E
    return A2


@njit(inline="always")
def _lanes(shape, pad):
    """float32 scratch; zeros where its last axis runs past the tile (``pad``): lanes nothing writes stay finite."""
    return np.zeros(shape, np.float32) if pad else np.empty(shape, np.float32)


@njit(inline="always")
def _scatter(state, d0, src):
    """state[d0 : d0 + W, :] = src (N, W) transposed (state: (D, N))."""
    for n in range(src.shape[0]):
        for w in range(src.shape[1]):
            state[d0 + w, n] = src[n, w]


@njit(parallel=True, cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def scan_fwd_kernel(u, delta, delta_bias, softplus, A_T, B, C, D, z, has_z, h0, width, out, last_state, checkpoints):
    """out = (sum_n C h + D u) * silu(z), h starting from h0, Δ = softplus(delta + delta_bias) if softplus else
    delta + delta_bias; last_state[b, d, n] = h at the last step; checkpoints[b, k] = h before step k * BLOCK (N, D)."""
    batch, seqlen, dim = u.shape
    n_groups, n_state = B.shape[1], A_T.shape[0]
    per_group = dim // n_groups
    tiles = (per_group + width - 1) // width
    for task in prange(batch * n_groups * tiles):
        bg = task // tiles  # task = (b * G + grp) * tiles + k
        k = task - bg * tiles
        b = bg // n_groups
        grp = bg - b * n_groups
        d0 = grp * per_group + k * width
        d1 = min(d0 + width, (grp + 1) * per_group)
        w_n = d1 - d0
        D_tile = D[d0:d1]
        bias = delta_bias[d0:d1]
        h = np.empty((n_state, w_n), np.float32)
        _gather(h, h0[b], d0)
        A2 = _log2e_tile(A_T, d0, w_n)
        dt_x = np.empty(w_n, np.float32)
        dt = np.empty(w_n, np.float32)
        for t in range(seqlen):
            if t % BLOCK == 0:
                _copy_rows(checkpoints[b, t // BLOCK, :, d0:d1], h)
            _step_sizes(dt, dt_x, delta[b, t, d0:d1], bias, softplus, False)  # no slope: dt_x is not written
            x = u[b, t, d0:d1]
            y = out[b, t, d0:d1]  # accumulated in place
            for w in range(w_n):
                dt_x[w] = dt[w] * x[w]
                y[w] = D_tile[w] * x[w]
            for n in range(n_state):
                B_n = B[b, grp, t, n]
                C_n = C[b, grp, t, n]
                h_n = h[n]
                A2_n = A2[n]
                for w in range(w_n):
                    h_new = _exp2(dt[w] * A2_n[w]) * h_n[w] + dt_x[w] * B_n
                    h_n[w] = h_new
                    y[w] += C_n * h_new
            if has_z:
                z_t = z[b, t, d0:d1]
                for w in range(w_n):
                    y[w] *= z_t[w] * _sigmoid(z_t[w])
        _scatter(last_state[b], d0, h)


@njit(parallel=True, cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def scan_bwd_kernel(
    u,
    delta,
    delta_bias,
    softplus,
    A_T,
    B,
    C,
    D,
    z,
    has_z,
    width,
    checkpoints,
    dout,
    dlast_state,
    du,
    ddelta,
    dz,
    dA,
    dD,
    dbias,
    dB_part,
    dC_part,
    dh0,
):
    """Gradients of scan_fwd_kernel; ddelta is the gradient of the raw delta (through the bias and softplus). dA
    (batch, N, D), dD and dbias (batch, D) are float64 per-batch sums, dB_part and dC_part (tiles, batch, G, L, N)
    per-tile sums; the caller adds them up. dh0 (batch, D, N): the initial state's (checkpoints[:, 0] holds h0, so the
    recomputation needs nothing else)."""
    batch, seqlen, dim = u.shape
    n_groups, n_state = B.shape[1], A_T.shape[0]
    per_group = dim // n_groups
    tiles = (per_group + width - 1) // width
    n_blocks = (seqlen + BLOCK - 1) // BLOCK
    for task in prange(batch * n_groups * tiles):
        bg = task // tiles  # task = (b * G + grp) * tiles + k
        k = task - bg * tiles
        b = bg // n_groups
        grp = bg - b * n_groups
        d0 = grp * per_group + k * width
        d1 = min(d0 + width, (grp + 1) * per_group)
        w_n = d1 - d0
        D_tile = D[d0:d1]
        bias = delta_bias[d0:d1]
        # One block of recomputed forward values: O(BLOCK N W) per task, never O(L N D); no more than L steps of it
        # (fresh pages cost more than a short scan).
        steps = min(BLOCK, seqlen)
        w_p = max(w_n, _VEC_MIN)  # the reverse loop's lanes: the tile's, then zeros
        pad = w_p > w_n
        decay = _lanes((steps, n_state, w_p), pad)  # exp(Δ_t A)
        h_prev = _lanes((steps, n_state, w_p), pad)  # h_{t-1}
        g = _lanes((steps, w_p), pad)  # dL/dy_t (after the gate's chain rule)
        dts = _lanes((steps, w_p), pad)  # Δ_t
        dsps = np.empty((steps, w_n), np.float32)  # dΔ_t / d delta_t
        h = np.empty((n_state, w_n), np.float32)
        A2 = _log2e_tile(A_T, d0, w_n)
        A_tile = _lanes((n_state, w_p), pad)
        _copy_rows(A_tile, A_T[:, d0:d1])
        gh = _lanes((n_state, w_p), pad)  # a_{t+1} dL/dh_{t+1}: the adjoint state
        _gather(gh[:, :w_n], dlast_state[b], d0)
        dA_block = _lanes((n_state, w_p), pad)
        dA_sum = np.zeros((n_state, w_n), np.float64)
        dD_sum = np.zeros(w_n, np.float64)
        dbias_sum = np.zeros(w_n, np.float64)
        dt_x = _lanes(w_p, pad)
        y = np.empty(w_n, np.float32)
        sum_B = _lanes(w_p, pad)  # sum_n dL/dh_n B_n
        sum_A = _lanes(w_p, pad)  # sum_n dL/dh_n A_n a_n h_{t-1,n}
        for blk in range(n_blocks - 1, -1, -1):
            t0 = blk * BLOCK
            t1 = min(seqlen, t0 + BLOCK)
            _copy_rows(h, checkpoints[b, blk, :, d0:d1])
            for t in range(t0, t1):
                j = t - t0
                dt = dts[j]
                _step_sizes(dt[:w_n], dsps[j], delta[b, t, d0:d1], bias, softplus)
                x = u[b, t, d0:d1]
                for w in range(w_n):
                    dt_x[w] = dt[w] * x[w]
                    y[w] = D_tile[w] * x[w]
                for n in range(n_state):
                    B_n = B[b, grp, t, n]
                    C_n = C[b, grp, t, n]
                    h_n = h[n]
                    A2_n = A2[n]
                    a_jn = decay[j, n]
                    hp_jn = h_prev[j, n]
                    for w in range(w_n):
                        a = _exp2(dt[w] * A2_n[w])
                        a_jn[w] = a
                        hp_jn[w] = h_n[w]
                        h_new = a * h_n[w] + dt_x[w] * B_n
                        h_n[w] = h_new
                        y[w] += C_n * h_new
                dout_t = dout[b, t, d0:d1]
                g_j = g[j]
                if has_z:
                    z_t = z[b, t, d0:d1]
                    dz_t = dz[b, t, d0:d1]
                    for w in range(w_n):
                        s = _sigmoid(z_t[w])
                        dz_t[w] = dout_t[w] * y[w] * s * (_F(1.0) + z_t[w] * (_F(1.0) - s))
                        g_j[w] = dout_t[w] * z_t[w] * s
                else:
                    for w in range(w_n):
                        g_j[w] = dout_t[w]

            for n in range(n_state):
                for w in range(w_n):
                    dA_block[n, w] = 0.0
            for t in range(t1 - 1, t0 - 1, -1):
                j = t - t0
                dt = dts[j]
                dsp = dsps[j]
                x = u[b, t, d0:d1]
                g_j = g[j]
                for w in range(w_n):
                    dt_x[w] = dt[w] * x[w]
                    sum_B[w] = 0.0
                    sum_A[w] = 0.0
                for n in range(n_state):
                    B_n = B[b, grp, t, n]
                    C_n = C[b, grp, t, n]
                    a_jn = decay[j, n]
                    hp_jn = h_prev[j, n]
                    gh_n = gh[n]
                    A_n = A_tile[n]
                    dA_n = dA_block[n]
                    acc_B = _F(0.0)
                    acc_C = _F(0.0)
                    for w in range(w_p):  # lanes past the tile add exact zeros
                        gh_t = g_j[w] * C_n + gh_n[w]  # dL/dh_t
                        a = a_jn[w]
                        hp = hp_jn[w]
                        acc_C += g_j[w] * (a * hp + dt_x[w] * B_n)
                        acc_B += gh_t * dt_x[w]
                        sum_B[w] += gh_t * B_n
                        ga_hp = gh_t * a * hp
                        sum_A[w] += ga_hp * A_n[w]
                        dA_n[w] += dt[w] * ga_hp
                        gh_n[w] = a * gh_t
                    dB_part[k, b, grp, t, n] = acc_B
                    dC_part[k, b, grp, t, n] = acc_C
                du_t = du[b, t, d0:d1]
                ddelta_t = ddelta[b, t, d0:d1]
                # one loop per array written: the backward 1.06-1.10x as fast as with one loop writing all four
                # (from 64 channels a tile; the same bits), docs/ssm.md "How the fused kernel works"
                for w in range(w_n):
                    du_t[w] = g_j[w] * D_tile[w] + dt[w] * sum_B[w]
                for w in range(w_n):
                    ddelta_t[w] = (sum_A[w] + x[w] * sum_B[w]) * dsp[w]
                for w in range(w_n):
                    dD_sum[w] += g_j[w] * x[w]
                for w in range(w_n):
                    dbias_sum[w] += ddelta_t[w]
            for n in range(n_state):  # float32 within a block, float64 across blocks
                for w in range(w_n):
                    dA_sum[n, w] += dA_block[n, w]
        _scatter(dh0[b], d0, gh[:, :w_n])  # the adjoint has walked back past step 0: gh = exp(Δ_0 A) dL/dh_0 = dL/dh0
        _copy_rows(dA[b, :, d0:d1], dA_sum)
        for w in range(w_n):
            dD[b, d0 + w] = dD_sum[w]
            dbias[b, d0 + w] = dbias_sum[w]


@contextmanager
def llvm_interleave(count: int) -> Iterator[None]:
    """Numba compiles with LLVM's loop interleave count forced to ``count`` inside the block (0: nothing changes),
    and with the cost model's choice again after it."""
    if not count:
        yield
        return
    llvm.set_option("", f"-force-vector-interleave={count}")
    try:
        yield
    finally:
        llvm.set_option("", "-force-vector-interleave=0")  # LLVM's default: the cost model decides


def _run_forward(kernel, *args) -> None:
    """kernel(*args), the kernel compiled first (or loaded from numba's cache) under _FORWARD_INTERLEAVE."""
    if _FORWARD_INTERLEAVE and not getattr(kernel, "signatures", True):  # a dispatcher with nothing compiled yet
        with llvm_interleave(_FORWARD_INTERLEAVE):
            kernel.compile(tuple(numba.typeof(a) for a in args))
    kernel(*args)


def serial_twin(kernel, name: str):
    """`kernel` compiled without threads (prange runs as range): the same tasks in index order, the same results."""
    f = getattr(kernel, "py_func", None)
    if f is None:  # NUMBA_DISABLE_JIT: njit returned the Python function itself
        return kernel
    twin = pytypes.FunctionType(f.__code__, f.__globals__, name, f.__defaults__, f.__closure__)
    twin.__qualname__ = name  # own cache files: numba's cache index does not tell a parallel build from a serial one
    return njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)(twin)


scan_fwd_serial = serial_twin(scan_fwd_kernel, "scan_fwd_serial")
scan_bwd_serial = serial_twin(scan_bwd_kernel, "scan_bwd_serial")


def tile_width(batch: int, dim: int, n_groups: int) -> int:
    """Channels per task: at most _MAX_TILE, fewer while there are under _MIN_TASKS tasks. Shapes only, no threads."""
    per_group = dim // n_groups
    tiles = -(-per_group // _MAX_TILE)
    while batch * n_groups * tiles < _MIN_TASKS and -(-per_group // (tiles + 1)) >= 8:
        tiles += 1
    return -(-per_group // tiles)


@njit(cache=True)  # no fastmath: the adds stay in index order
def _sum_rows(parts, total):
    for j in range(parts.shape[1]):
        total[j] = parts[0, j]
    for i in range(1, parts.shape[0]):
        for j in range(parts.shape[1]):
            total[j] += parts[i, j]


def sum_in_order(parts: torch.Tensor) -> torch.Tensor:
    """parts.sum(0) as parts[0] + parts[1] + ... : elementwise adds in index order, whatever torch's threads do.

    One compiled loop rather than a torch add per part: the study's scans have 64 parts (one per batch element) and
    64 adds from Python cost ~0.2 ms, more than a short scan."""
    total = parts.new_empty(parts.shape[1:])
    _sum_rows(parts.reshape(parts.shape[0], -1).numpy(), total.view(-1).numpy())
    return total


def _numpy(t: torch.Tensor | None, shape: tuple[int, ...] = ()) -> np.ndarray:
    """The kernels' view of an input: C-contiguous float32 (a copy only if t is not), zeros of ``shape`` if None.

    Always the same numba type, so the kernels compile once: a strided view would compile (and run) a slow variant.
    """
    if t is None:
        return np.zeros(shape, np.float32)
    return np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)


def choose_build(parallel, serial, updates: int):
    """The parallel kernel when there is work enough to pay for starting the pool (more on one thread), else its
    serial twin (the same bits either way).

    One knob for both pools: torch.set_num_threads also bounds the scan's threads."""
    if updates < _PARALLEL_MIN:
        return serial
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if threads == 1 and updates < _SERIAL_ONE_THREAD:
        return serial
    numba.set_num_threads(threads)
    return parallel


# The kernels run inside custom ops, so dispatch modes (FlopCounterMode, fake tensors, torch.compile) see one opaque
# op with known output shapes instead of tensors handed to numpy.
@torch.library.custom_op("mambaout::selective_scan_fwd", mutates_args=(), device_types="cpu")
def selective_scan_fwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A_T: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    h0: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Canonical-layout float32 forward (see the module docstring); h0 (batch, D, N) or None for zeros; Δ =
    softplus(delta + delta_bias) if ``delta_softplus`` else delta + delta_bias (no bias if None).

    Returns out (batch, L, D), last_state (batch, D, N) and the checkpoints (batch, ceil(L / BLOCK), N, D) that the
    backward starts from.
    """
    batch, seqlen, dim = u.shape
    n_state = A_T.shape[0]
    out = torch.empty_like(u)
    last_state = u.new_empty(batch, dim, n_state)
    checkpoints = u.new_empty(batch, -(-seqlen // BLOCK), n_state, dim)
    kernel = choose_build(scan_fwd_kernel, scan_fwd_serial, batch * seqlen * dim * n_state)
    _run_forward(
        kernel,
        _numpy(u),
        _numpy(delta),
        _numpy(delta_bias, (dim,)),
        delta_softplus,
        _numpy(A_T),
        _numpy(B),
        _numpy(C),
        _numpy(D, (dim,)),
        _numpy(z, (0, 0, 0)),
        z is not None,
        _numpy(h0, (batch, dim, n_state)),
        tile_width(batch, dim, B.shape[1]),
        out.numpy(),
        last_state.numpy(),
        _numpy(checkpoints),
    )
    return out, last_state, checkpoints


@selective_scan_fwd.register_fake
def _(u, delta, A_T, B, C, D, z, h0=None, delta_bias=None, delta_softplus=False):
    batch, seqlen, dim = u.shape
    n_state = A_T.shape[0]
    return (
        torch.empty_like(u),
        u.new_empty(batch, dim, n_state),
        u.new_empty(batch, -(-seqlen // BLOCK), n_state, dim),
    )


@torch.library.custom_op("mambaout::selective_scan_bwd", mutates_args=(), device_types="cpu")
def selective_scan_bwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A_T: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    checkpoints: torch.Tensor,
    dout: torch.Tensor,
    dlast_state: torch.Tensor | None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> list[torch.Tensor]:
    """Gradients [du, ddelta, dA_T, dB, dC, dD, dz, dh0, ddelta_bias] (ddelta: of the raw delta, before the bias and
    softplus); an empty tensor where the input was None (dh0: always)."""
    batch, seqlen, dim = u.shape
    n_groups, n_state = B.shape[1], A_T.shape[0]
    width = tile_width(batch, dim, n_groups)
    tiles = -(-(dim // n_groups) // width)
    kernel = choose_build(scan_bwd_kernel, scan_bwd_serial, batch * seqlen * dim * n_state)
    du, ddelta = torch.empty_like(u), torch.empty_like(u)
    dz = torch.empty_like(u) if z is not None else u.new_empty(0, 0, 0)
    dA = u.new_empty(batch, n_state, dim, dtype=torch.float64)
    dD = u.new_empty(batch, dim, dtype=torch.float64)
    dbias = u.new_empty(batch, dim, dtype=torch.float64)
    dB_part = u.new_empty(tiles, batch, n_groups, seqlen, n_state)
    dC_part = u.new_empty(tiles, batch, n_groups, seqlen, n_state)
    dh0 = u.new_empty(batch, dim, n_state)
    kernel(
        _numpy(u),
        _numpy(delta),
        _numpy(delta_bias, (dim,)),
        delta_softplus,
        _numpy(A_T),
        _numpy(B),
        _numpy(C),
        _numpy(D, (dim,)),
        _numpy(z, (0, 0, 0)),
        z is not None,
        width,
        _numpy(checkpoints),
        _numpy(dout),
        _numpy(dlast_state, (batch, dim, n_state)),
        du.numpy(),
        ddelta.numpy(),
        dz.numpy(),
        dA.numpy(),
        dD.numpy(),
        dbias.numpy(),
        dB_part.numpy(),
        dC_part.numpy(),
        dh0.numpy(),
    )
    return [
        du,
        ddelta,
        sum_in_order(dA).float(),
        sum_in_order(dB_part),
        sum_in_order(dC_part),
        sum_in_order(dD).float() if D is not None else u.new_empty(0),
        dz if z is not None else u.new_empty(0),
        dh0,
        sum_in_order(dbias).float() if delta_bias is not None else u.new_empty(0),
    ]


@selective_scan_bwd.register_fake
def _(u, delta, A_T, B, C, D, z, checkpoints, dout, dlast_state, delta_bias=None, delta_softplus=False):
    batch, dim, n_state = u.shape[0], u.shape[2], A_T.shape[0]
    return [
        torch.empty_like(u),
        torch.empty_like(u),
        torch.empty_like(A_T),
        torch.empty_like(B),
        torch.empty_like(C),
        torch.empty_like(D) if D is not None else u.new_empty(0),
        torch.empty_like(u) if z is not None else u.new_empty(0),
        u.new_empty(batch, dim, n_state),
        torch.empty_like(delta_bias) if delta_bias is not None else u.new_empty(0),
    ]


def _setup_context(ctx, inputs, output):
    u, delta, A_T, B, C, D, z, h0, delta_bias, delta_softplus = inputs
    ctx.has_h0, ctx.delta_softplus = h0 is not None, delta_softplus
    ctx.save_for_backward(u, delta, A_T, B, C, D, z, output[2], delta_bias)


def _backward(ctx, dout, dlast_state, dcheckpoints):
    u, delta, A_T, B, C, D, z, checkpoints, delta_bias = ctx.saved_tensors
    grads = selective_scan_bwd(
        u, delta, A_T, B, C, D, z, checkpoints, dout, dlast_state, delta_bias, ctx.delta_softplus
    )
    du, ddelta, dA_T, dB, dC, dD, dz, dh0, dbias = grads
    dD = dD if D is not None else None
    dz = dz if z is not None else None
    dbias = dbias if delta_bias is not None else None
    return du, ddelta, dA_T, dB, dC, dD, dz, dh0 if ctx.has_h0 else None, dbias, None


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def compile_kernels(parallel: bool = True) -> None:
    """Compile every kernel now, or load it from numba's cache: the serial builds of the forward and the backward and
    the ordered sums (a small scan through the ops), and with ``parallel`` the threaded builds for the same types.

    The kernels' argument types never change (`_numpy`), so a process that scans afterwards compiles nothing. A
    cold compile takes ~15 s of one core, ~5 s of it the serial builds (2-core Intel Xeon); `mambaout study`, whose
    runs and measurements are all on one thread, compiles those in a background process while it sets up its tasks,
    so that the first SSM run finds them in the cache.

    Example:
        >>> compile_kernels()  # doctest: +SKIP
    """
    generator = torch.Generator().manual_seed(0)
    u, delta, z, dout = (torch.rand(1, 2, 8, generator=generator) for _ in range(4))
    A_T = -torch.rand(16, 8, generator=generator)
    B, C = (torch.rand(1, 1, 2, 16, generator=generator) for _ in range(2))
    D, bias = (torch.rand(8, generator=generator) for _ in range(2))
    _, last_state, checkpoints = selective_scan_fwd(u, delta, A_T, B, C, D, z, None, bias, True)
    selective_scan_bwd(u, delta, A_T, B, C, D, z, checkpoints, dout, torch.zeros_like(last_state), bias, True)
    if parallel and hasattr(scan_fwd_kernel, "compile"):  # not under NUMBA_DISABLE_JIT
        for threaded, serial, interleave in (
            (scan_fwd_kernel, scan_fwd_serial, _FORWARD_INTERLEAVE),
            (scan_bwd_kernel, scan_bwd_serial, 0),
        ):
            with llvm_interleave(interleave):
                threaded.compile(serial.signatures[0])
