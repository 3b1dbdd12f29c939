"""`mambaout eval`: top-1/top-5 of a set of weights on a validation folder or the built-in digits.

Preprocessing is the model's `pretrained_cfg` (224x224, crop 1.0, bicubic, ImageNet mean/std) resolved by timm's
`resolve_data_config` and built by `create_transform`. Weights written by `mambaout train` carry their run folder
beside them: its `config.yaml` supplies the model name and resolution, its `classes.txt` the class order. The number
of classes is read from the classifier in the weights.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import yaml
from timm.data import create_transform, resolve_data_config
from torch import nn
from torch.utils.data import DataLoader

from mambaout.data import DIGITS_CLASSES, SkipBadImages, digits_splits, eval_folder, eval_loader
from mambaout.engine.distributed import all_reduce_sum, resolve_device
from mambaout.errors import UserError
from mambaout.models.checkpoint import checkpoint_filter, read_state_dict, resolve_source, unwrap_state_dict
from mambaout.models.factory import create_model
from mambaout.models.fuse import fuse_for_inference


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Cross-entropy loss and top-1/top-5 accuracy (%) over the loader, summed over all processes.

    Example:
        >>> evaluate(model, val_loader, torch.device("cpu"))  # doctest: +SKIP
        {'loss': 0.21, 'top1': 96.4, 'top5': 99.9, 'images': 360}
    """
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits, images
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(images)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == targets[:, None]
        totals += torch.stack(
            [
                nn.functional.cross_entropy(logits, targets, reduction="sum").double(),
                hits[:, :1].sum().double(),
                hits.sum().double(),
                torch.tensor(float(targets.shape[0]), dtype=torch.float64, device=device),
            ]
        )
    loss, top1, top5, n = all_reduce_sum(totals).tolist()
    n = max(n, 1.0)
    return dict(loss=loss / n, top1=100.0 * top1 / n, top5=100.0 * top5 / n, images=int(n))


def run_folder_info(weights: str | os.PathLike) -> tuple[dict[str, Any], list[str] | None]:
    """(config.yaml values, classes.txt lines) of the run folder holding `weights`, or ({}, None)."""
    folder = Path(str(weights)).expanduser().parent
    config = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").is_file() else {}
    classes = (folder / "classes.txt").read_text().split("\n")[:-1] if (folder / "classes.txt").is_file() else None
    return config or {}, classes


def classifier_size(weights: str | os.PathLike, use_ema: bool = False) -> int:
    """Number of classes of the weights (rows of `head.fc.weight`), whatever their layout."""
    sd = checkpoint_filter(unwrap_state_dict(read_state_dict(resolve_source(weights)), use_ema=use_ema))
    if "head.fc.weight" not in sd:
        raise UserError(f"{weights} has no classifier (head.fc.weight); eval needs weights trained for classification")
    return int(sd["head.fc.weight"].shape[0])


def evaluate_weights(
    pretrained: str | os.PathLike,
    model: str | None = None,
    data: str | os.PathLike | None = None,
    batch_size: int = 64,
    input_size: int | None = None,
    device: str = "auto",
    workers: int = 4,
    use_ema: bool = False,
) -> dict[str, Any]:
    """Score `pretrained` on `data` (a folder with val/<class>/ or <class>/ images; None: the digits val split).

    Example:
        >>> evaluate_weights("runs/x/best.safetensors")  # model, size from runs/x/config.yaml  # doctest: +SKIP
        {'model': 'mambaout_pico', 'top1': 97.2, 'top5': 99.9, 'images': 360, ...}
    """
    started = time.perf_counter()
    config, classes = run_folder_info(pretrained)
    model = model or config.get("model")
    if not model:
        raise UserError(f"give --model: {pretrained} has no config.yaml beside it to say which variant it is")
    num_classes = classifier_size(pretrained, use_ema)
    net = create_model(model, pretrained=str(pretrained), num_classes=num_classes, use_ema=use_ema)
    size = input_size or config.get("input_size")
    data_cfg = resolve_data_config({"input_size": (3, size, size)} if size else {}, model=net)
    transform = create_transform(**data_cfg, is_training=False)

    if data is None:
        classes = classes or DIGITS_CLASSES
        dataset = digits_splits(size or 32, val_transform=transform)[1]
        name = "digits (built-in val split)"
    else:
        dataset = eval_folder(data, classes=classes, transform=transform)
        classes = classes or dataset.classes
        name = str(data)
    if len(classes) > num_classes:
        raise UserError(
            f"{name} has {len(classes)} classes but the weights classify {num_classes}; evaluate them on their own data"
        )
    dev = resolve_device(device)
    dataset = SkipBadImages(dataset, max_bad=len(dataset))
    workers = 0 if data is None else min(workers, os.cpu_count() or 1)  # digits are in memory already
    loader = eval_loader(dataset, batch_size, workers=workers, pin_memory=dev.type == "cuda")
    metrics = evaluate(fuse_for_inference(net.to(dev)), loader, dev)  # oneDNN-fused blocks on CPU, same logits
    return dict(
        model=model,
        weights=str(pretrained),
        data=name,
        images=metrics["images"],
        top1=round(metrics["top1"], 3),
        top5=round(metrics["top5"], 3),
        loss=round(metrics["loss"], 5),
        input_size=list(data_cfg["input_size"]),
        crop_pct=data_cfg["crop_pct"],
        interpolation=data_cfg["interpolation"],
        unreadable_images=dataset.bad_count,
        ema=use_ema,
        seconds=round(time.perf_counter() - started, 2),
    )
