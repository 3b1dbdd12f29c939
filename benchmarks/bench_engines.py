"""mambaout_femto in every engine, side by side in one process: img/s at batch 8, batch-1 latency, top-1 agreement.

Agreement needs a model whose predictions mean something: the model is first trained on the built-in digits at
64 x 64 with `mambaout.train` (the digits preset, `--train-epochs` epochs, about 25 s each on 2 loaded cores)
until it is well above chance (10 %), then every engine's top-1 is compared with PyTorch fp32's on the 360 digits
of the validation split, at 64 x 64 (the exports have dynamic size). Throughput and latency are timed at
`--image-size` (224 x 224), batch 8 and batch 1, on random inputs: PyTorch (plain fp32, and
`optimize_for_inference`), timm eager fp32 (same weights), ONNX Runtime and OpenVINO in fp32 and int8 (calibrated
on 32 digits at the size each pass runs at: the digits' first images for timing, the training split's for agreement).
Last, each engine's batch throughput as multiply-accumulates per second against this machine's float32 arithmetic
(a 1024 x 1024 matmul's FMA rate on torch's threads, wall time, measured before and after the engines): what share
of it each engine reaches, and the share an fp32 engine would need to run at 2x timm.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_engines.py --train-epochs 4 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mambaout.data import digits_splits, eval_transform
from mambaout.export.bench import BENCH_ENGINES, compare_engines, format_rows
from mambaout.measure import count_macs, machine_description, matmul_fma_rate
from mambaout.models import create_model
from mambaout.models.variants import pretrained_cfg
from mambaout.train import resolve_recipe, train

AGREEMENT_SIZE = 64


def digits_arrays(model: str, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(validation images (360, 3, size, size), their labels, 32 training images for calibration), normalised
    through the evaluation transform `mambaout.train` evaluates with."""
    cfg = pretrained_cfg(model)
    transform = eval_transform(
        size, crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"]
    )
    train_split, val_split = digits_splits(size, val_transform=transform, train_transform=transform)
    val = [val_split[i] for i in range(len(val_split))]
    x = torch.stack([im for im, _ in val]).numpy()
    calibration = torch.stack([train_split[i][0] for i in range(32)]).numpy()
    return x, np.asarray([t for _, t in val]), calibration


def trained(model: str, epochs: int, folder: Path) -> tuple[torch.nn.Module, float]:
    """`model` trained on the digits at AGREEMENT_SIZE for `epochs` (the digits preset), and its best val top-1."""
    recipe = resolve_recipe({"model": model, "input_size": AGREEMENT_SIZE, "epochs": epochs, "output": str(folder)})
    result = train(recipe)
    return create_model(model, pretrained=str(result.run_dir / "best.safetensors"), num_classes=10), result.best_top1


def arithmetic_report(model: torch.nn.Module, rows: list[dict], size: int, rate: float) -> str:
    """Each engine's batch throughput in multiply-accumulates per second, as a share of the matmul FMA `rate`."""
    macs = count_macs(model, (1, 3, size, size), include_norms=False)
    lines = [
        f"arithmetic on {machine_description()}: {macs / 1e9:.3f} G MACs an image (convolutions and matrix products); "
        f"float32 matmul 1024^3 at {rate / 1e9:.1f} G FMA/s (wall time, median of 20)"
    ]
    for r in rows:
        lines.append(f"  {r['engine']:<18}{r['precision']:<6}{100 * r['throughput'] * macs / rate:6.1f} % of it")
    timm = next((r for r in rows if r["engine"] == "timm"), None)
    if timm is not None:
        need = 200 * timm["throughput"] * macs / rate
        lines.append(f"  an fp32 engine at 2x timm's img/s would need {need:.0f} % of it")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mambaout_femto")
    p.add_argument("--image-size", type=int, default=224, help="timing size (agreement is at 64 x 64)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--train-epochs", type=int, default=4, help="digits epochs at 64 x 64 (0: random weights)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--engines", default=",".join(BENCH_ENGINES))
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()

    torch.manual_seed(0)
    agree_x, agree_y, calib_x = digits_arrays(args.model, AGREEMENT_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        if args.train_epochs:
            model, best = trained(args.model, args.train_epochs, Path(tmp) / "digits")
            seconds = time.time() - t
            print(f"trained {args.train_epochs} epochs on digits at 64x64 in {seconds:.0f} s, val top-1 {best:.1f} %")
        else:
            model = create_model(args.model, num_classes=10)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))  # the preset trains on 1
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(torch.from_numpy(agree_x[i : i + 64])) for i in range(0, len(agree_x), 64)])
    val_acc = float((logits.argmax(1).numpy() == agree_y).mean())
    engines = args.engines.split(",")
    # Timing at the benchmark size, agreement at 64 x 64 in a second pass: each int8 model is calibrated at the size
    # it runs at (an NNCF-quantized IR calibrated at 64 x 64 failed to run at 224 x 224: a per-axis quantizer on a
    # spatial axis).
    rates = [matmul_fma_rate() for _ in range(10)]
    rows = compare_engines(model, engines, args.batch, args.image_size, args.repeats, calibration="digits")
    rates += [matmul_fma_rate() for _ in range(10)]
    agreement = compare_engines(
        model, engines, args.batch, AGREEMENT_SIZE, repeats=1, warmup=0, images=agree_x, calibration=calib_x
    )
    for row, agreed in zip(rows, agreement):
        row.update(top1_agreement=agreed["top1_agreement"], logit_rel_error=agreed["logit_rel_error"])
    print(
        f"{args.model}: timed at {args.image_size}px, batch {args.batch} (latency: batch 1), torch threads "
        f"{torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; agreement on the "
        f"{len(agree_x)} digits validation images at {AGREEMENT_SIZE}x{AGREEMENT_SIZE}, where PyTorch fp32 top-1 is "
        f"{val_acc:.3f}"
    )
    print(format_rows(rows))
    print(arithmetic_report(model, rows, args.image_size, statistics.median(rates)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, val_accuracy=val_acc, args=vars(args)), f, indent=2)


if __name__ == "__main__":
    main()
