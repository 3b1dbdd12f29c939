"""Frames/s of `mambaout watch` at a plant camera's size: femto at 224 x 224, every engine, the whole detector.

Builds (once, in `--work`) a short 224 x 224 line and a detector on it whose per-frame encoder is mambaout_femto at
224 x 224 with the SSM temporal model, trained for a handful of steps (the cost of a frame does not depend on the
weights), exports its step graph for ONNX Runtime and OpenVINO, then streams the same test video through `watch`
on each engine, interleaved round by round in this process, and prints each engine's median frames/s against the
25 frames/s of a camera. Everything a frame costs is in: decoding the video, the encoder, the patch branch, the
motion score and the temporal step. Every engine runs at each of `--batches` (`watch --batch`: frames scored at a
time; a file is read flat out, so every batch is full), and the process keeps its freed memory mapped as the
`mambaout` command does (`keep_freed_memory`).

    OMP_NUM_THREADS=2 python benchmarks/bench_watch.py --rounds 3
    OMP_NUM_THREADS=2 python benchmarks/bench_watch.py --engines torch --batches 1,2,4,8
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mambaout.engine.allocator import keep_freed_memory
from mambaout.measure.machine import machine_description
from mambaout.monitor.watch import watch

CAMERA_FPS = 25.0


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mambaout", *args], check=True, stdout=subprocess.DEVNULL)


def build(work: Path, size: int, backbone: str, mixer: str, engines: list[str]) -> tuple[Path, Path, dict[str, Path]]:
    """(test video, run folder, engine -> export folder) of a quickly trained detector at `size`. The line and the
    run are kept per configuration under `work`; the step graphs of the `engines` that need one are exported anew
    every time (the exporter may have changed since)."""
    data, run = work / f"line{size}", work / f"run_{backbone}_{size}_{mixer}"
    if not (data / "meta.json").is_file():
        cli(
            "anomaly", "generate", "--output", str(data), "--size", str(size), "--frames", "400",
            "--test-frames", "1500", "--train-videos", "2", "--test-videos", "1", "--events", "2",
        )  # fmt: skip
    if not (run / "detector.pt").is_file():
        cli(
            "anomaly", "train", "--data", str(data), "--output", str(run), "--backbone", backbone,
            "--image-size", str(size), "--mixer", mixer, "--encoder-steps", "5", "--encoder-batch-size", "4",
            "--encoder-frames", "64", "--patch-frames", "16", "--steps", "10", "--batch-size", "2",
            "--seq-len", "64", "--burn-in", "16",
        )  # fmt: skip
    exports = {}
    for engine, fmt in (("onnxruntime", "onnx"), ("openvino", "openvino")):
        if engine not in engines:
            continue
        exports[engine] = run / f"bench_export_{fmt}"
        shutil.rmtree(exports[engine], ignore_errors=True)
        cli("export", "--run", str(run), "--format", fmt, "--output", str(exports[engine]))
    return sorted((data / "test").iterdir())[0], run, exports


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="bench_watch_work", help="where the line, the run and the exports are kept")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--backbone", default="mambaout_femto")
    p.add_argument("--mixer", default="ssm", choices=("conv", "ssm", "attn_causal"))
    p.add_argument("--engines", default="torch,onnxruntime,openvino")
    p.add_argument("--frames", type=int, default=600, help="frames streamed per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="PyTorch's threads (the engines use their own defaults)")
    p.add_argument("--batches", default="1,4", help="the `watch --batch` sizes each engine runs at")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    engines = args.engines.split(",")
    video, run, exports = build(Path(args.work), args.size, args.backbone, args.mixer, engines)
    # name -> (engine, batch)
    batches = [int(b) for b in args.batches.split(",")]
    setups = {}
    for engine in engines:
        for b in batches:
            setups[engine if b == 1 else f"{engine} b{b}"] = (engine, b)
    names = list(setups)

    def stream(name: str, frames: int) -> dict:
        engine, batch = setups[name]
        model = str(exports[engine]) if engine in exports else None
        return watch(str(video), str(run), quiet=True, max_frames=frames, engine=engine, model=model, batch=batch)

    for name in names:
        stream(name, 30)  # warm-up: imports, graph compilation, first-call costs
    fps: dict[str, list[float]] = {n: [] for n in names}
    for i in range(args.rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            fps[name].append(stream(name, args.frames)["fps"])
        print(f"round {i}: " + ", ".join(f"{n} {fps[n][-1]:.1f}" for n in names), flush=True)
    load = os.getloadavg()
    print(
        f"watch, {args.backbone} at {args.size}x{args.size}, {args.mixer} temporal model, {machine_description()} "
        f"(ONNX Runtime and OpenVINO on their own defaults), load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"{time.strftime('%Y-%m-%d')}, median of {args.rounds} rounds of {args.frames} frames:"
    )
    for name in names:
        median = statistics.median(fps[name])
        print(f"  {name:<15} {median:6.1f} frames/s  ({median / CAMERA_FPS:.2f}x a {CAMERA_FPS:g} fps camera)")
    print(f"({platform.machine()}; wall clock, so other jobs on the machine lower these figures)")


if __name__ == "__main__":
    main()
