"""mambaout_femto in every engine, side by side in one process: img/s at batch 8, batch-1 latency, top-1 agreement.

The model is first fine-tuned briefly on the built-in digits at the benchmark size (so its predictions mean
something), then timed in PyTorch (plain fp32, and `optimize_for_inference`), timm eager fp32 (same weights), ONNX
Runtime and OpenVINO in fp32 and int8 (calibrated on digits not used for agreement). Agreement: top-1 agreement with
the PyTorch fp32 model on held-out digits, and the relative error of the logits.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_engines.py --steps 30 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from mambaout.data.digits import digits_images
from mambaout.data.transforms import eval_transform
from mambaout.export.bench import BENCH_ENGINES, compare_engines, format_rows
from mambaout.models import create_model


def digits_at(size: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    images, targets = digits_images(size=size)
    transform = eval_transform(size)
    x = torch.stack([transform(im) for im in images[start : start + count]]).numpy()
    return x, np.asarray(targets[start : start + count])


def finetune(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, steps: int, batch: int = 16) -> float:
    """A short AdamW fine-tune on digits; returns the last steps' training accuracy."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    rng = np.random.default_rng(0)
    model.train()
    correct = []
    for _ in range(steps):
        idx = rng.choice(len(x), batch, replace=False)
        logits = model(torch.from_numpy(x[idx]))
        loss = F.cross_entropy(logits, torch.from_numpy(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        correct.append((logits.argmax(1).numpy() == y[idx]).mean())
    return float(np.mean(correct[-5:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mambaout_femto")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30, help="fine-tune steps on digits (0: random weights)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--agreement-images", type=int, default=200)
    p.add_argument("--engines", default=",".join(BENCH_ENGINES))
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()

    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10)
    size = args.image_size
    agree_x, agree_y = digits_at(size, 0, args.agreement_images)
    calib_x, _ = digits_at(size, args.agreement_images, 32)
    train_acc = None
    if args.steps:
        train_x, train_y = digits_at(size, args.agreement_images + 32, 512)
        t = time.time()
        train_acc = finetune(model, train_x, train_y, args.steps)
        print(f"fine-tuned {args.steps} steps in {time.time() - t:.0f} s, train accuracy (last 5) {train_acc:.2f}")
    model.eval()
    with torch.inference_mode():
        val_acc = float((model(torch.from_numpy(agree_x)).argmax(1).numpy() == agree_y).mean())
    rows = compare_engines(
        model, args.engines.split(","), args.batch, size, args.repeats, images=agree_x, calibration=calib_x
    )
    print(
        f"{args.model} @ {size}px, batch {args.batch} (latency: batch 1), torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; PyTorch fp32 accuracy on the agreement digits "
        f"{val_acc:.3f}"
    )
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, val_accuracy=val_acc, train_accuracy=train_acc, args=vars(args)), f, indent=2)


if __name__ == "__main__":
    main()
