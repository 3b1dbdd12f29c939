"""Mask R-CNN training speed with a MambaOut backbone: images/s at the paper's 800x1333 input.

Synthetic batches (no data set needed): images of exactly --height x --width, each with --objects random boxes whose
masks fill them, so the model's own resize (shorter side --min-size, longer at most --max-size) is the identity at the
defaults. The steps run through the engine's driver (`mambaout.engine.run`, what `mambaout detect train` runs: autocast
as --amp says, the loss terms summed, backward, AdamW without decay on norms and biases); the batches are in memory,
so data loading is excluded. Reports the median update time over --steps after --warmup updates, and peak GPU memory.

GPU (the number the paper's setting needs; per-GPU batch 2 as in mmdetection's 8x2 recipe):
    python benchmarks/bench_dense.py --backbone mambaout_tiny --batch-size 2 --amp auto
CPU smoke run:
    python benchmarks/bench_dense.py --backbone mambaout_pico --height 128 --width 213 --min-size 128 --max-size 213 \
        --device cpu --steps 3 --warmup 1
"""

from __future__ import annotations

import argparse
import json

import torch

from mambaout.dense.detect import to_device
from mambaout.dense.maskrcnn import mask_rcnn
from mambaout.engine.run import OptimizerSpec, RunConfig, Task, run
from mambaout.engine.runtime import AMP_CHOICES, setup_runtime
from mambaout.measure import UpdateTimer, median_iqr
from mambaout.measure.machine import cpu_name


def synthetic_batch(batch: int, height: int, width: int, objects: int, num_classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        xy = torch.rand(objects, 2, generator=g) * torch.tensor([width * 0.8, height * 0.8])
        wh = 16 + torch.rand(objects, 2, generator=g) * torch.tensor([width * 0.2, height * 0.2])
        boxes = torch.cat([xy, xy + wh], 1).round()
        masks = torch.zeros(objects, height, width, dtype=torch.uint8)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
            m[y0:y1, x0:x1] = 1
        labels = torch.randint(1, num_classes, (objects,), generator=g)
        images.append(torch.rand(3, height, width, generator=g))
        targets.append(dict(boxes=boxes, labels=labels, masks=masks))
    return images, targets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="mambaout_tiny")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--width", type=int, default=1333)
    p.add_argument("--min-size", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--objects", type=int, default=8, help="objects per image (COCO averages 7.3)")
    p.add_argument("--num-classes", type=int, default=81)
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES)
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()

    rt = setup_runtime(args.device, args.amp)
    shape = (args.batch_size, args.height, args.width, args.objects, args.num_classes)
    batches = [synthetic_batch(*shape, seed) for seed in (0, 1)]

    class Synthetic(UpdateTimer, Task):
        optimizer = OptimizerSpec("adamw", 1e-4, 0.05)
        warmup = args.warmup

        def model(self):
            model = mask_rcnn(args.backbone, args.num_classes, min_size=args.min_size, max_size=args.max_size)
            return model.to(memory_format=torch.channels_last) if args.channels_last else model

        def train_data(self):
            return iter([batches[i % 2] for i in range(args.warmup + args.steps)])

        def loss(self, forward, batch):
            images, targets = batch
            images = [im.to(rt.device, non_blocking=True) for im in images]
            return forward(images, [to_device(t, rt.device) for t in targets])

    torch.manual_seed(0)
    task = Synthetic()
    run(task, RunConfig(updates=args.warmup + args.steps, runtime=rt, progress="none"))
    step, iqr = median_iqr(task.update_seconds)
    cuda = rt.device.type == "cuda"
    result = dict(
        backbone=args.backbone,
        input=f"{args.height}x{args.width}",
        batch_size=args.batch_size,
        amp=rt.precision,
        device=torch.cuda.get_device_name(rt.device) if cuda else f"cpu ({cpu_name()})",
        threads=torch.get_num_threads(),
        step_s=round(step, 4),
        images_per_s=round(args.batch_size / step, 2),
        step_iqr_s=round(iqr, 4),
        peak_memory_gb=round(torch.cuda.max_memory_allocated(rt.device) / 2**30, 2) if cuda else None,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
