"""Streaming cost of the line detector per mixer: temporal-step latency and state memory against frames seen.

    python benchmarks/bench_stream.py                      # 10^2 .. 10^5 frames, all mixers, plot
    python benchmarks/bench_stream.py --frames 100 1000 10000 --output stream.png

Each temporal model (default detector shape: 32-dim embeddings, conv width 64 and the others matched to its
parameter count, 2 blocks, kernel 4, horizons 1 and 16; random weights: cost does not depend on them) is stepped
frame by frame; at each checkpoint the median latency of the next 50 steps and the bytes of the state carried are
recorded. The conv and the SSM are stepped through every frame. Unwindowed causal attention is stepped for real up
to `--real-limit` frames; past that its key/value cache is filled to the checkpoint's length with random keys and
values (its cost depends on the cache's size only), since stepping it 10^5 times costs O(N^2). The per-frame encoder
(MambaOut pico at 64x64, femto at 224x224) is timed at batch 1 and added for the whole detector's frames/s.
The machine and its load (`uptime`) are printed: on a shared machine the numbers are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from mambaout.anomaly.encoder import FrameEncoder
from mambaout.anomaly.temporal import TemporalModel, matched_widths, state_bytes

EMBED, WIDTH, HORIZONS = 32, 64, (1, 16)


def step_latency_ms(model: TemporalModel, state, repeats: int = 50):
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            x = torch.randn(1, EMBED)
            t0 = time.perf_counter()
            _, state = model.step(x, state)
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000, float(np.min(times)) * 1000, state


def fill_attention_cache(state, frames: int):
    """Every block's key/value cache as after `frames` frames (random keys and values)."""
    for s in state:
        kv = s["kv"]
        capacity = max(kv.shape[3], 1 << (frames - 1).bit_length())
        s["kv"] = torch.randn(*kv.shape[:3], capacity, kv.shape[4])
        s["length"] = frames
    return state


def bench_mixer(mixer: str, window: int | None, checkpoints: list[int], real_limit: int) -> list[dict]:
    width = matched_widths(EMBED, WIDTH, horizons=HORIZONS)[mixer]
    model = TemporalModel(EMBED, width, mixer=mixer, horizons=HORIZONS, window=window).eval()
    state, seen, rows = model.init_state(1), 0, []
    with torch.no_grad():
        for n in checkpoints:
            if mixer == "attn_causal" and window is None and n > real_limit:
                state, seen = fill_attention_cache(state, n), n
            while seen < n:
                _, state = model.step(torch.randn(1, EMBED), state)
                seen += 1
            ms, best, state = step_latency_ms(model, state)
            seen += 50
            rows.append(dict(frames=n, step_ms=ms, step_ms_min=best, state_bytes=state_bytes(state)))
            tag = mixer if window is None else f"{mixer} W={window}"
            kib = state_bytes(state) / 1024
            print(f"  {tag} @ {n:>6}: median {ms:.3f} ms/step (min {best:.3f}), state {kib:.1f} KiB", flush=True)
    return rows


def encoder_ms(backbone: str, size: int, repeats: int = 30) -> float:
    encoder = FrameEncoder(backbone, embed_dim=EMBED).eval()
    frame = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    with torch.no_grad():
        for _ in range(3):
            encoder(frame)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            encoder(frame)
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in results["mixers"].items():
        n = [r["frames"] for r in rows]
        ax1.plot(n, [r["step_ms"] for r in rows], "o-", label=name)
        ax2.plot(n, [r["state_bytes"] / 1024 for r in rows], "o-", label=name)
    for ax, label in ((ax1, "temporal step latency (ms)"), (ax2, "state memory (KiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("frames seen")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax2.legend()
    fig.suptitle(f"streaming cost per frame ({results['machine']}, {results['threads']} threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[100, 1000, 10000, 100000])
    p.add_argument("--real-limit", type=int, default=10000, help="step unwindowed attention for real up to here")
    p.add_argument("--window", type=int, default=256, help="the windowed attention's W")
    p.add_argument("--output", default="bench_stream.png")
    p.add_argument("--json", default="bench_stream.json")
    p.add_argument("--no-femto", action="store_true", help="skip the 224x224 femto encoder")
    p.add_argument("--threads", type=int, default=1, help="torch threads (one step is too small to split)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = dict(machine=platform.processor() or platform.machine(), threads=torch.get_num_threads(), load=load)
    print(f"threads {results['threads']}, load average {load}", flush=True)
    results["mixers"] = {}
    for mixer, window in (("conv", None), ("ssm", None), ("attn_causal", None), ("attn_causal", args.window)):
        name = mixer if window is None else f"{mixer} W={window}"
        results["mixers"][name] = bench_mixer(mixer, window, sorted(args.frames), args.real_limit)
    results["encoder_ms"] = {"mambaout_pico@64": encoder_ms("mambaout_pico", 64)}
    if not args.no_femto:
        results["encoder_ms"]["mambaout_femto@224"] = encoder_ms("mambaout_femto", 224)
    for key, ms in results["encoder_ms"].items():
        print(f"encoder {key}: {ms:.2f} ms/frame", flush=True)
    pico = results["encoder_ms"]["mambaout_pico@64"]
    for name, rows in results["mixers"].items():
        last = rows[-1]
        print(f"detector pico@64 + {name} at frame {last['frames']}: {1000 / (pico + last['step_ms']):.0f} frames/s")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    plot(results, args.output)
    print(f"wrote {args.json} and {args.output}")


if __name__ == "__main__":
    main()
