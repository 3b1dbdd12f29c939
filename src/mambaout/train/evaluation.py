"""`mambaout eval`: top-1/top-5 of a set of weights on a validation folder or the built-in digits.

Preprocessing is the model's `pretrained_cfg` (224x224, crop 1.0, bicubic, ImageNet mean/std) resolved by timm's
`resolve_data_config` and built by `create_transform`. Weights written by `mambaout train` carry their run folder
beside them: its `config.yaml` supplies the model name and resolution, its `classes.txt` the class order. The number
of classes is read from the classifier in the weights.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml
from timm.data import create_transform, resolve_data_config

from mambaout.data import DIGITS_CLASSES, SkipBadImages, digits_splits, eval_folder, eval_loader
from mambaout.errors import UserError
from mambaout.models.checkpoint import checkpoint_filter, read_state_dict, resolve_source, unwrap_state_dict
from mambaout.models.factory import create_model
from mambaout.train.distributed import resolve_device
from mambaout.train.loop import evaluate


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
    metrics = evaluate(net.to(dev), loader, dev)
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
