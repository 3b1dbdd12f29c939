"""Training throughput (images/s) of the library's own training step, for any model, batch, precision and device.

Runs `mambaout.engine.loop.train_updates` (the step every pipeline uses) with `mambaout train`'s loss (Mixup/CutMix,
the paper's drop path, timm AdamW with weight-decay groups, per-update cosine schedule, the NaN check) on one
synthetic batch repeated, so data loading is excluded: this measures the model + optimizer step. Warm-up updates
(oneDNN/cuDNN autotuning, torch.compile) are not timed. Prints one line and, with --json, a JSON object.

    python benchmarks/bench_train.py --model mambaout_femto --batch-size 16 --image-size 224          # CPU
    python benchmarks/bench_train.py --model mambaout_tiny --batch-size 128 --amp bf16 --channels-last  # one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

import mambaout
from mambaout.engine.distributed import resolve_device
from mambaout.engine.loop import TrainParts, train_updates
from mambaout.engine.runtime import resolve_amp
from mambaout.train.recipe import resolve_recipe
from mambaout.train.trainer import build_optimization, classification_loss


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def bench(
    model_name: str,
    batch_size: int,
    image_size: int = 224,
    amp: str = "none",
    device: str = "auto",
    channels_last: bool = False,
    compile: bool = False,
    steps: int = 10,
    warmup: int = 3,
    num_classes: int = 1000,
) -> dict:
    dev = resolve_device(device)
    amp_dtype = resolve_amp(amp, dev)
    recipe = resolve_recipe({"model": model_name, "data": "synthetic", "batch_size": batch_size})
    torch.manual_seed(0)
    model = mambaout.create_model(model_name, num_classes=num_classes, drop_path_rate=recipe.drop_path).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler, mixup, loss_fn = build_optimization(recipe, model, num_classes, 1000, recipe.resolved_lr())
    parts = TrainParts(
        model=model,
        forward=torch.compile(model) if compile else model,
        optimizer=optimizer,
        loss=classification_loss(loss_fn, mixup, dev, channels_last),
        schedule=lambda step: scheduler.step_update(num_updates=step),
        device=dev,
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
        amp_dtype=amp_dtype,
    )
    images = torch.randn(batch_size, 3, image_size, image_size)
    targets = torch.randint(0, num_classes, (batch_size,))
    if dev.type == "cuda":
        images, targets = images.pin_memory(), targets.pin_memory()
    batches = [(images, targets)] * (warmup + steps)

    step, _ = train_updates(parts, iter(batches[:warmup]), updates=warmup)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    last = [time.perf_counter()]

    def on_update(*_):  # the loss .item() inside the loop has already synchronised the device
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    train_updates(parts, iter(batches[warmup:]), updates=steps, global_step=step, on_update=on_update)
    median = sorted(times)[len(times) // 2]
    return dict(
        model=model_name,
        device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({cpu_name()}, {os.cpu_count()} cores)",
        threads=torch.get_num_threads(),
        batch_size=batch_size,
        image_size=image_size,
        amp=amp,
        channels_last=channels_last,
        compile=compile,
        steps=steps,
        step_ms_median=round(1000 * median, 1),
        images_per_s=round(batch_size / median, 1),
        images_per_s_mean=round(batch_size * len(times) / sum(times), 1),
        peak_memory_gib=round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None,
        torch=torch.__version__,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mambaout_femto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16", "auto"])
    p.add_argument("--device", default="auto")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--steps", type=int, default=10, help="timed updates")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates first")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    r = bench(a.model, a.batch_size, a.image_size, a.amp, a.device, a.channels_last, a.compile, a.steps, a.warmup)
    threads = f"{r['threads']} thread" + ("s" if r["threads"] != 1 else "")
    print(
        f"{r['model']} train step, batch {r['batch_size']} at {r['image_size']}px, amp {r['amp']}, "
        f"channels_last {r['channels_last']}, compile {r['compile']} on {r['device']} ({threads}): "
        f"{r['images_per_s']} images/s (median step {r['step_ms_median']} ms over {r['steps']})"
        + (f", peak memory {r['peak_memory_gib']} GiB" if r["peak_memory_gib"] is not None else "")
    )
    if a.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
