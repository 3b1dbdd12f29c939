"""Training and evaluating Mask R-CNN on COCO-format data: the paper's 1x schedule and the official COCO metrics.

Recipe (paper §5, mmdetection's `mask_rcnn_*_fpn_1x_coco` with AdamW as in the Swin/ConvNeXt configs): 12 epochs,
global batch 16, AdamW lr 1e-4 (betas 0.9/0.999), weight decay 0.05 (not on norms and biases), linear warm-up over
500 iterations from 0.001x, lr x0.1 after epochs 8 and 11, shorter side 800 / longer at most 1333, horizontal flip,
mixed precision on GPUs. Box and mask AP come from pycocotools' COCOeval, as in the paper.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
from pycocotools.cocoeval import COCOeval
from timm.optim import create_optimizer_v2
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader, Subset

from mambaout.dense.coco import CocoInstances, collate
from mambaout.dense.mask_rcnn import mask_rcnn
from mambaout.dense.runtime import (
    RunLog,
    Runtime,
    gather,
    load_checkpoint,
    save_checkpoint,
    setup_runtime,
    with_warmup,
    write_json,
)
from mambaout.errors import UserError

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass
class DetectConfig:
    """Everything a detection run depends on; written to <output>/config.json and into every checkpoint."""

    backbone: str = "mambaout_tiny"
    coco: str = ""
    output: str = "runs/det"
    backbone_weights: str | None = None
    num_classes: int | None = None  # background included; None: the annotation file's categories + 1
    train_split: str = "train2017"
    val_split: str = "val2017"
    epochs: int = 12
    batch_size: int = 16  # global, over all processes
    lr: float = 1e-4
    weight_decay: float = 0.05
    lr_steps: tuple[int, ...] = (8, 11)
    warmup_iters: int = 500
    warmup_ratio: float = 1e-3
    min_size: tuple[int, ...] = (800,)  # several values: multi-scale training, one picked per batch
    max_size: int = 1333
    fpn_channels: int = 256
    box_fc_channels: int = 1024
    mask_channels: int = 256
    drop_path_rate: float | None = None  # None: the variant's ImageNet rate
    mixer: str = "conv"
    amp: str = "auto"
    device: str | None = None
    workers: int = 4
    eval_every: int = 1  # epochs; 0 evaluates only after the last one, -1 never
    log_every: int = 50
    max_steps: int | None = None  # stop early (smoke runs)
    max_images: int | None = None  # first N images of each split
    seed: int = 0
    resume: bool = False
    model_overrides: dict[str, Any] = field(default_factory=dict)  # more torchvision MaskRCNN keyword arguments

    def model_args(self, num_classes: int) -> dict[str, Any]:
        return dict(
            backbone=self.backbone,
            num_classes=num_classes,
            mixer=self.mixer,
            min_size=tuple(self.min_size),
            max_size=self.max_size,
            fpn_channels=self.fpn_channels,
            box_fc_channels=self.box_fc_channels,
            mask_channels=self.mask_channels,
            **self.model_overrides,
        )


def train_detector(cfg: DetectConfig) -> dict[str, Any]:
    """Train Mask R-CNN as `cfg` says; writes config.json, log.jsonl, last.pt and metrics.json into cfg.output.

    Returns {"losses": [per-step total loss], "metrics": last COCO metrics, "checkpoint": path}
    (metrics and checkpoint only on the main process).

    Example:
        >>> cfg = DetectConfig(backbone="mambaout_tiny", coco="/datasets/coco", output="runs/det")
        >>> train_detector(cfg)["metrics"]["bbox_AP"]  # doctest: +SKIP
    """
    rt = setup_runtime(cfg.device, cfg.amp)
    torch.manual_seed(cfg.seed + rt.rank)
    if cfg.batch_size % rt.world_size:
        raise UserError(f"batch size {cfg.batch_size} does not split over {rt.world_size} processes; use a multiple")
    train_set = CocoInstances(cfg.coco, cfg.train_split, train=True, max_images=cfg.max_images)
    val_set = CocoInstances(cfg.coco, cfg.val_split, max_images=cfg.max_images) if cfg.eval_every >= 0 else None
    num_classes = cfg.num_classes or train_set.num_classes
    check_num_classes(num_classes, train_set)
    categories = [dict(id=i, name=n) for i, n in zip(train_set.category_ids, train_set.category_names)]

    model_args = cfg.model_args(num_classes)
    model = mask_rcnn(**model_args, backbone_weights=cfg.backbone_weights, drop_path_rate=cfg.drop_path_rate)
    model.to(rt.device)
    net = rt.wrap(model)
    loader = rt.train_loader(train_set, cfg.batch_size, cfg.seed, cfg.workers, collate_fn=collate)
    iters_per_epoch = len(loader)
    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    decay = MultiStepLR(optimizer, [e * iters_per_epoch for e in cfg.lr_steps], gamma=0.1)
    scheduler = with_warmup(optimizer, decay, cfg.warmup_iters, cfg.warmup_ratio)
    scaler = rt.grad_scaler()

    output = Path(cfg.output)
    start_epoch, step = 0, 0
    if cfg.resume and (output / "last.pt").is_file():
        ckpt = load_checkpoint(output / "last.pt", "detect")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        rt.log(f"resumed from {output / 'last.pt'} at epoch {start_epoch}")
    if rt.is_main:
        write_json(
            asdict(cfg) | dict(num_classes=num_classes, world_size=rt.world_size, precision=rt.precision),
            output / "config.json",
        )
    log = RunLog(output, rt)
    rt.log(
        f"Mask R-CNN {cfg.backbone}: {len(train_set)} training images, {iters_per_epoch} iterations/epoch, "
        f"{rt.world_size} process(es), {rt.precision} on {rt.device}"
    )
    if not cfg.backbone_weights:
        rt.log("no --backbone-weights: the backbone starts from random weights (the paper starts from ImageNet ones)")

    losses, metrics, done = [], {}, False
    for epoch in range(start_epoch, cfg.epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        net.train()
        for images, targets in loader:
            terms = train_step(net, images, targets, optimizer, scaler, rt)
            scheduler.step()
            step += 1
            losses.append(terms["loss"].item())
            if step % cfg.log_every == 0 or step == 1:
                lr = optimizer.param_groups[0]["lr"]
                log(step=step, epoch=epoch + 1, lr=lr, **{k: round(v.item(), 4) for k, v in terms.items()})
                rt.log(f"epoch {epoch + 1} step {step}: loss {losses[-1]:.4f} lr {lr:.2e}")
            if cfg.max_steps and step >= cfg.max_steps:
                done = True
                break
        last = epoch + 1 == cfg.epochs or done
        if rt.is_main:
            save_checkpoint(
                output / "last.pt",
                dict(
                    task="detect",
                    model_args=model_args,
                    categories=categories,
                    config=asdict(cfg),
                    model=model.state_dict(),
                    optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(),
                    scaler=scaler.state_dict(),
                    epoch=epoch + 1,
                    step=step,
                ),
            )
        if val_set is not None and (last or (cfg.eval_every > 0 and (epoch + 1) % cfg.eval_every == 0)):
            metrics = evaluate_detector(model, val_set, rt, categories, workers=cfg.workers)
            log(step=step, epoch=epoch + 1, **metrics)
            if rt.is_main:
                write_json(metrics, output / "metrics.json")
        if done:
            break
    return dict(losses=losses, metrics=metrics, checkpoint=str(output / "last.pt") if rt.is_main else None)


def train_step(
    net: torch.nn.Module,
    images: list[torch.Tensor],
    targets: list[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    rt: Runtime,
) -> dict[str, torch.Tensor]:
    """One optimisation step on a batch; returns torchvision's loss terms and their sum as 'loss'."""
    images = [im.to(rt.device, non_blocking=True) for im in images]
    targets = [to_device(t, rt.device) for t in targets]
    with rt.autocast():
        terms = net(images, targets)
    loss = sum(terms.values())
    if not torch.isfinite(loss):
        raise UserError(f"the loss became {loss.item()}; lower --lr or train with --amp none")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return {k: v.detach() for k, v in terms.items()} | {"loss": loss.detach()}


def check_num_classes(num_classes: int, dataset: CocoInstances) -> None:
    if num_classes < dataset.num_classes:
        raise UserError(
            f"the annotations have {dataset.num_classes - 1} categories but num_classes={num_classes} leaves room for "
            f"{num_classes - 1} (num_classes counts the background); use num_classes={dataset.num_classes}"
        )


def to_device(target: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Plain tensors on `device` (torchvision's detection models do not need the tv_tensor wrappers)."""
    return {k: v.as_subclass(torch.Tensor).to(device) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


@torch.no_grad()
def evaluate_detector(
    model: torch.nn.Module,
    dataset: CocoInstances,
    rt: Runtime | None = None,
    categories: list[dict[str, Any]] | None = None,
    batch_size: int = 2,
    workers: int = 2,
) -> dict[str, float]:
    """COCO box and mask AP of `model` on `dataset` (every process takes a share; the main one scores).

    `categories` are the model's classes in label order (from its checkpoint); they must be the dataset's.
    Returns {"bbox_AP": ..., "bbox_AP50": ..., ..., "segm_APl": ...} in [0, 1] (-1 where COCO has no such objects).

    Example:
        >>> evaluate_detector(model, CocoInstances("/datasets/coco", "val2017"))["bbox_AP"]  # doctest: +SKIP
    """
    rt = rt or setup_runtime(str(next(model.parameters()).device), "none")
    category_ids = [c["id"] for c in categories] if categories else dataset.category_ids
    if sorted(category_ids) != dataset.category_ids:
        raise UserError(
            f"the model knows {len(category_ids)} categories but the annotation file has {len(dataset.category_ids)} "
            "(or other ids); evaluate on data with the categories it was trained on"
        )
    shard = Subset(dataset, range(rt.rank, len(dataset), rt.world_size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    was_training = model.training
    model.eval()
    results = []
    for images, targets in loader:
        with rt.autocast():
            outputs = model([im.to(rt.device) for im in images])
        for out, target in zip(outputs, targets):
            results.extend(coco_results(out, target["image_id"], category_ids))
    model.train(was_training)
    results = [r for part in gather(results, rt) for r in part]
    if not rt.is_main:
        return {}
    return coco_metrics(dataset, results)


def coco_results(output: dict[str, torch.Tensor], image_id: int, category_ids: list[int]) -> list[dict[str, Any]]:
    """One image's detections as COCO result records (bbox xywh, score, category id, RLE mask)."""
    boxes = output["boxes"].float().cpu()
    boxes[:, 2:] -= boxes[:, :2]
    masks = (output["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8) if "masks" in output else None
    records = []
    for i, (box, label, score) in enumerate(zip(boxes.tolist(), output["labels"].tolist(), output["scores"].tolist())):
        rec = dict(image_id=image_id, category_id=category_ids[label - 1], bbox=box, score=score)
        if masks is not None:
            rle = mask_utils.encode(np.asfortranarray(masks[i]))
            rec["segmentation"] = dict(size=rle["size"], counts=rle["counts"].decode("ascii"))
        records.append(rec)
    return records


def coco_metrics(dataset: CocoInstances, results: list[dict[str, Any]]) -> dict[str, float]:
    """pycocotools' COCOeval for boxes and masks over the dataset's images."""
    metrics = {}
    for iou_type in ("bbox", "segm"):
        # Mask results go without their box, so COCO sizes them by the mask (as mmdetection does).
        drop = "segmentation" if iou_type == "bbox" else "bbox"
        dets = [{k: v for k, v in r.items() if k != drop} for r in results]
        if not dets:
            metrics.update({f"{iou_type}_{k}": 0.0 for k in METRIC_NAMES})
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = COCOeval(dataset.coco, dataset.coco.loadRes(dets), iou_type)
            evaluator.params.imgIds = list(dataset.ids)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        metrics.update({f"{iou_type}_{k}": float(v) for k, v in zip(METRIC_NAMES, evaluator.stats[:6])})
    return metrics


def load_detector(checkpoint: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the Mask R-CNN a `mambaout detect train` checkpoint holds; returns (model in eval mode, checkpoint)."""
    ckpt = load_checkpoint(checkpoint, "detect")
    model = mask_rcnn(**ckpt["model_args"], drop_path_rate=0.0)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def eval_checkpoint(
    checkpoint: str,
    coco: str,
    split: str = "val2017",
    device: str | None = None,
    batch_size: int = 2,
    workers: int = 2,
    max_images: int | None = None,
    amp: str = "auto",
) -> dict[str, float]:
    """`mambaout detect eval`: COCO AP of a trained checkpoint on `<coco>/<split>`."""
    rt = setup_runtime(device, amp)
    model, ckpt = load_detector(checkpoint, rt.device)
    dataset = CocoInstances(coco, split, max_images=max_images)
    return evaluate_detector(model, dataset, rt, ckpt["categories"], batch_size=batch_size, workers=workers)
