"""Training and evaluating Mask R-CNN on COCO-format data: the paper's 1x schedule and the official COCO metrics.

Recipe (paper §5, mmdetection's `mask_rcnn_*_fpn_1x_coco` with AdamW as in the Swin/ConvNeXt configs): 12 epochs,
global batch 16, AdamW lr 1e-4 (betas 0.9/0.999), weight decay 0.05 (not on norms and biases), linear warm-up over
500 iterations from 0.001x, lr x0.1 after epochs 8 and 11, shorter side 800 / longer at most 1333, horizontal flip,
mixed precision on GPUs. Box and mask AP come from pycocotools' COCOeval, as in the paper.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
from pycocotools.cocoeval import COCOeval
from torch.optim.lr_scheduler import MultiStepLR

from mambaout.dense.coco import CocoInstances, collate
from mambaout.dense.configs import DetectConfig
from mambaout.dense.maskrcnn import mask_rcnn
from mambaout.dense.run import DenseTask, load_dense_model, setup, train_dense
from mambaout.engine.distributed import gather_objects
from mambaout.engine.runtime import Runtime, setup_runtime
from mambaout.errors import UserError

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class Detection(DenseTask):
    """Mask R-CNN on COCO-format data, the paper's 1x schedule."""

    name, title, unit = "detect", "Mask R-CNN", "epoch"
    collate = staticmethod(collate)

    def __init__(self, cfg: DetectConfig, rt: Runtime):
        train_set = CocoInstances(cfg.coco, cfg.train_split, train=True, max_images=cfg.max_images)
        val_set = CocoInstances(cfg.coco, cfg.val_split, max_images=cfg.max_images) if cfg.eval_every >= 0 else None
        self.num_classes = cfg.num_classes or train_set.num_classes
        check_num_classes(self.num_classes, train_set)
        self.categories = [dict(id=i, name=n) for i, n in zip(train_set.category_ids, train_set.category_names)]
        super().__init__(cfg, rt, train_set, val_set, cfg.model_args(self.num_classes))

    def model(self) -> torch.nn.Module:
        cfg = self.cfg
        return mask_rcnn(**self.model_args, backbone_weights=cfg.backbone_weights, drop_path_rate=cfg.drop_path_rate)

    def loss(self, forward: torch.nn.Module, batch: tuple[list, list]) -> dict[str, torch.Tensor]:
        images, targets = batch
        images = [im.to(self.rt.device, non_blocking=True) for im in images]
        return forward(images, [to_device(t, self.rt.device) for t in targets])  # torchvision's loss terms

    def decay(self, optimizer: torch.optim.Optimizer, updates_per_epoch: int) -> MultiStepLR:
        return MultiStepLR(optimizer, [e * updates_per_epoch for e in self.cfg.lr_steps], gamma=0.1)

    def evaluate(self, model: torch.nn.Module, runtime: Runtime) -> dict[str, float]:
        return evaluate_detector(model, self.val_set, runtime, self.categories, workers=self.cfg.workers)

    def extra(self) -> dict[str, Any]:
        return dict(categories=self.categories, num_classes=self.num_classes)


def train_detector(cfg: DetectConfig) -> dict[str, Any]:
    """Train Mask R-CNN as `cfg` says; writes config.yaml, config.json, log.jsonl, last.pt and metrics.json into
    cfg.output.

    Returns {"losses": [per-step total loss], "metrics": last COCO metrics, "checkpoint": path}
    (metrics and checkpoint only on the main process).

    Example:
        >>> cfg = DetectConfig(backbone="mambaout_tiny", coco="/datasets/coco", output="runs/det")
        >>> train_detector(cfg)["metrics"]["bbox_AP"]  # doctest: +SKIP
    """
    if not cfg.coco:
        raise UserError("detection needs COCO-format data: pass --coco DIR (annotations/instances_<split>.json)")
    task = Detection(cfg, setup(cfg))
    return train_dense(cfg, task, epochs=cfg.epochs, updates=cfg.max_steps or None)


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
    loader = rt.eval_loader(dataset, batch_size, workers, collate_fn=collate)
    was_training = model.training
    model.eval()
    results = []
    for images, targets in loader:
        with rt.autocast():
            outputs = model([im.to(rt.device) for im in images])
        for out, target in zip(outputs, targets):
            results.extend(coco_results(out, target["image_id"], category_ids))
    model.train(was_training)
    results = [r for part in gather_objects(results) for r in part]
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
    return load_dense_model(checkpoint, "detect", mask_rcnn, device)


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
