"""`analyze --measure`: time one Gated CNN block per mixer over a sweep of sequence lengths, on this machine.

Each point is one block of width D on a (batch, L, D) sequence, inference mode: norm, fc1, the mixer, gate, fc2.
With the attention mixer that block has the linear cost of a Transformer block (fc1 + fc2 = 8·D²·L MACs, qkv and
proj 4·D²·L: 24·D²·L FLOPs in all), so the paper's test applies to it as is: its attention kernel (q k^T and
the weighted sum of v, 4·D·L² FLOPs) should cost as much as the rest of the block at L = 6·D. The sweep also
times that kernel alone (`F.scaled_dot_product_attention` on the block's q, k, v shapes), and the measured
crossover is where the kernel's time equals the rest of the block's (block minus kernel, interpolated in log-log
between grid points); the sweep also reports from which L the attention block is slower than the SSM block.

The default grid is 6·D x (1/8, 1/4, 1/2, 1, 2); a mixer whose call takes longer than `max_call_s` is not timed at
longer lengths.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mambaout.measure import interleaved, peak_memory_bytes
from mambaout.mixers.attention import num_heads_for
from mambaout.models.sequence import sequence_block

DEFAULT_FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 1, 2)


def default_seq_lens(dim: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[int]:
    """6·D x fractions, rounded to multiples of 16: D=384 -> [288, 576, 1152, 2304, 4608]."""
    return [max(16, int(round(6 * dim * f / 16)) * 16) for f in fractions]


def sweep_mixers(causal: bool) -> dict[str, dict[str, Any]]:
    """The block variants compared: local conv, SSM and attention, all causal or all fully visible."""
    if causal:
        return {"conv": dict(causal=True), "ssm": dict(scan="causal"), "attn_causal": {}}
    return {"conv": dict(causal=False), "ssm": dict(scan="bidi"), "attn": {}}


def _crossover(seq_lens: list[int], ratios: list[float]) -> float | None:
    """First L where ratio(L) crosses 1, interpolated in log-log between grid points; None if it never does."""
    for i, r in enumerate(ratios):
        if r >= 1:
            if i == 0:
                return float(seq_lens[0]) if r == 1 else None
            (l0, r0), (l1, r1) = (seq_lens[i - 1], ratios[i - 1]), (seq_lens[i], r)
            t = -math.log(r0) / (math.log(r1) - math.log(r0))
            return math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0)))
    return None


@torch.inference_mode()
def latency_sweep(
    dim: int = 384,
    seq_lens: Sequence[int] | None = None,
    causal: bool = False,
    batch: int = 1,
    kernel_size: int = 7,
    repeats: int = 2,
    max_call_s: float = 4.0,
    device: str | torch.device = "cpu",
    log: bool = True,
) -> dict[str, Any]:
    """Forward latency (ms) and peak memory (MB) of one block per mixer at each L; see the module docstring.

    Timing is interleaved: each of `repeats` rounds times every (L, mixer) once, the attention kernel alone next to
    its block, and a point's latency is the median over rounds (`mambaout.measure.timing`), so load from other jobs
    falls on every mixer alike.

    Example:
        >>> result = latency_sweep(dim=32, seq_lens=[64, 128], log=False)
        >>> sorted(result["rows"][0])
        ['mixer', 'ms', 'peak_mb', 'seq_len']
    """
    from mambaout.study.schedule import machine_load

    device = torch.device(device)
    seq_lens = list(seq_lens or default_seq_lens(dim))
    attn_name = "attn_causal" if causal else "attn"
    heads = num_heads_for(dim)
    start = time.perf_counter()
    load_start = machine_load()[1]
    blocks = {
        name: sequence_block(dim, name, kernel_size, 8 / 3, dict(kwargs)).to(device).eval()
        for name, kwargs in sweep_mixers(causal).items()
    }
    # What each point runs: the blocks, and the attention kernel alone on the block's q, k, v shapes.
    calls: dict[tuple[str, int], Any] = {}
    cut: set[str] = set()
    peak: dict[tuple[str, int], float] = {}
    for block in blocks.values():  # a first call compiles (numba's SSM kernels): never counted as slow
        block(torch.randn(batch, seq_lens[0], dim, device=device))
    for seq_len in seq_lens:  # warm-up pass, shortest first: finds where a slow mixer stops being timed
        x = torch.randn(batch, seq_len, dim, device=device)
        q = torch.randn(batch, heads, seq_len, dim // heads, device=device)
        for name, block in blocks.items():
            if name in cut:
                continue
            t0 = time.perf_counter()
            block(x)
            if time.perf_counter() - t0 > max_call_s:
                cut.add(name)
            calls[(name, seq_len)] = lambda b=block, x=x: b(x)
            peak[(name, seq_len)] = peak_memory_bytes(calls[(name, seq_len)], device) / 2**20
            if name == attn_name:
                calls[("kernel", seq_len)] = lambda q=q: F.scaled_dot_product_attention(q, q, q, is_causal=causal)
                calls[("kernel", seq_len)]()
    seconds = interleaved(calls, repeats, device=device)
    ms = {key: 1e3 * statistics.median(times) for key, times in seconds.items()}
    rows = [
        dict(mixer=name, seq_len=seq_len, ms=ms[(name, seq_len)], peak_mb=peak[(name, seq_len)])
        for name in blocks
        for seq_len in seq_lens
        if (name, seq_len) in calls
    ]
    if log:
        for r in rows:
            print(f"  {r['mixer']:<12} L={r['seq_len']:<6} {r['ms']:9.1f} ms {r['peak_mb']:8.1f} MB", file=sys.stderr)
    sdpa = [dict(seq_len=L, ms=ms[("kernel", L)]) for L in seq_lens if ("kernel", L) in calls]
    attn_ms = {r["seq_len"]: r["ms"] for r in rows if r["mixer"] == attn_name}
    ratios = [s["ms"] / max(attn_ms[s["seq_len"]] - s["ms"], 1e-9) for s in sdpa]
    ssm_ms = {r["seq_len"]: r["ms"] for r in rows if r["mixer"] == "ssm"}
    both = [L for L in seq_lens if L in ssm_ms and L in attn_ms]
    return dict(
        dim=dim,
        causal=causal,
        batch=batch,
        device=str(device),
        threads=torch.get_num_threads(),
        seq_lens=seq_lens,
        rows=rows,
        attention_kernel=[dict(s, ratio_to_rest=r) for s, r in zip(sdpa, ratios)],
        predicted_crossover=6 * dim * (2 if causal else 1),
        measured_crossover=_crossover([s["seq_len"] for s in sdpa], ratios),
        attention_slower_than_ssm_from=_crossover(both, [attn_ms[L] / ssm_ms[L] for L in both]),
        seconds=time.perf_counter() - start,
        load=[load_start, machine_load()[1]],
    )


def format_sweep(result: dict[str, Any]) -> str:
    """Terminal table of a sweep: ms per mixer and L, the attention kernel's share, the crossover."""
    mixers = list(dict.fromkeys(r["mixer"] for r in result["rows"]))
    by = {(r["mixer"], r["seq_len"]): r for r in result["rows"]}
    kernel = {s["seq_len"]: s for s in result["attention_kernel"]}
    head = f"{'L':>7}" + "".join(f"{m + ' ms':>16}" for m in mixers) + f"{'attn kernel ms':>16}{'kernel/rest':>13}"
    threads = result["threads"]
    load = result.get("load")
    lines = [
        f"block forward latency, width D={result['dim']}, batch {result['batch']}, {result['device']}, "
        f"{threads} thread{'s' if threads != 1 else ''} ({result['seconds']:.0f} s"
        + (f", load average {load[0]:.1f} → {load[1]:.1f})" if load else ")"),
        head,
    ]
    for L in result["seq_lens"]:
        cells = "".join(f"{by[(m, L)]['ms']:>16.1f}" if (m, L) in by else f"{'-':>16}" for m in mixers)
        k = kernel.get(L)
        cells += f"{k['ms']:>16.1f}{k['ratio_to_rest']:>13.2f}" if k else f"{'-':>16}{'-':>13}"
        lines.append(f"{L:>7}{cells}")
    pred = result["predicted_crossover"]
    meas = result["measured_crossover"]
    rule = "12·D (causal: half the quadratic term)" if result["causal"] else "6·D"
    lines.append(
        f"attention kernel = rest of the block: predicted at L = {rule} = {pred}, measured at "
        + (f"L ≈ {meas:.0f}" if meas else f"L > {result['seq_lens'][-1]} (not reached in this sweep)")
    )
    over = result.get("attention_slower_than_ssm_from")
    lines.append(
        "the attention block is slower than the SSM block from "
        + (f"L ≈ {over:.0f}" if over else f"beyond L = {result['seq_lens'][-1]} (not reached in this sweep)")
    )
    return "\n".join(lines)


def plot_sweep(result: dict[str, Any], path) -> None:
    """Latency vs L (log-log), one line per mixer, the predicted and measured crossovers marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mixer in dict.fromkeys(r["mixer"] for r in result["rows"]):
        pts = [(r["seq_len"], r["ms"]) for r in result["rows"] if r["mixer"] == mixer]
        ax.plot(*zip(*pts), marker="o", label=f"block with {mixer}")
    if result["attention_kernel"]:
        pts = [(s["seq_len"], s["ms"]) for s in result["attention_kernel"]]
        ax.plot(*zip(*pts), ls=":", marker=".", color="gray", label="attention kernel alone")
    ax.axvline(
        result["predicted_crossover"], color="red", ls="--", label=f"predicted L = {result['predicted_crossover']}"
    )
    if result["measured_crossover"]:
        ax.axvline(
            result["measured_crossover"],
            color="black",
            ls="-.",
            label=f"measured L ≈ {result['measured_crossover']:.0f}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L (tokens)")
    ax.set_ylabel("forward latency (ms)")
    ax.set_title(f"one block, width D={result['dim']}, batch {result['batch']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
