"""Training throughput (images/s) of the library's own training step, for any model, batch, precision and device.

Runs `mambaout train`'s task pieces (Mixup/CutMix, the paper's drop path, timm AdamW with weight-decay groups,
per-update cosine schedule, the NaN check) through the engine's driver (`mambaout.engine.run`, what every pipeline
uses) on one synthetic batch repeated, in memory, so data loading is excluded: this measures the model + optimizer
step. Warm-up updates (oneDNN/cuDNN autotuning, torch.compile) are not timed. Prints one line and, with --json, a
JSON object.

    python benchmarks/bench_train.py --model mambaout_femto --batch-size 16 --image-size 224          # CPU
    python benchmarks/bench_train.py --model mambaout_tiny --batch-size 128 --amp bf16 --channels-last  # one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

import mambaout
from mambaout.engine.run import RunConfig, Task, run
from mambaout.engine.runtime import setup_runtime
from mambaout.measure import UpdateTimer
from mambaout.measure.machine import cpu_name
from mambaout.train.recipe import resolve_recipe
from mambaout.train.trainer import classification_loss, recipe_optimizer, recipe_schedule


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
    rt = setup_runtime(device, amp)
    recipe = resolve_recipe(
        {"model": model_name, "data": "synthetic", "batch_size": batch_size, "channels_last": channels_last}
    )
    images = torch.randn(batch_size, 3, image_size, image_size)
    targets = torch.randint(0, num_classes, (batch_size,))

    class Synthetic(UpdateTimer, Task):
        optimizer = recipe_optimizer(recipe, recipe.resolved_lr())
        schedule = recipe_schedule(recipe)

        def model(self):
            model = mambaout.create_model(model_name, num_classes=num_classes, drop_path_rate=recipe.drop_path)
            return model.to(memory_format=torch.channels_last) if channels_last else model

        def train_data(self):
            pin = rt.device.type == "cuda"
            batch = (images.pin_memory(), targets.pin_memory()) if pin else (images, targets)
            return iter([batch] * (warmup + steps))

    task = Synthetic()
    task.warmup = warmup
    task.loss = classification_loss(recipe, num_classes, rt.device)
    run(task, RunConfig(updates=warmup + steps, runtime=rt, compile=compile, progress="none"))
    dev = rt.device
    times = task.update_seconds
    median = statistics.median(times)
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
