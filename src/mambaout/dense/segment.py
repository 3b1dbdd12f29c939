"""Training and evaluating UperNet on ADE20K: the paper's 160k-iteration schedule, single- and multi-scale mIoU.

Recipe (paper §5, mmsegmentation's `upernet_*_512x512_160k_ade20k` with AdamW): 160k iterations at global batch 16 of
512x512 crops, AdamW lr 1e-4 (betas 0.9/0.999), weight decay 0.01 (not on norms and biases), linear warm-up over 1500
iterations from 1e-6x, then poly decay (power 1) to 0; cross-entropy ignoring label 255, auxiliary loss weight 0.4;
SyncBN under DDP; mixed precision on GPUs.
Evaluation rescales each image to fit 2048x512 ('whole' image, or 'slide' 512x512 windows with stride 341), scores at
the original resolution; multi-scale averages the softmax over ratios 0.5..1.75 of that size and their flips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import PolynomialLR
from torchvision.transforms import v2

from mambaout.dense.ade20k import ADE20K, IGNORE_INDEX, TrainTransform, normalize, rescaled_size
from mambaout.dense.configs import SegmentConfig
from mambaout.dense.run import DenseTask, load_dense_model, setup, train_dense
from mambaout.dense.uperhead import upernet
from mambaout.engine.distributed import gather_objects
from mambaout.engine.runtime import Runtime, setup_runtime
from mambaout.errors import UserError

MULTI_SCALE_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


class Segmentation(DenseTask):
    """UperNet on ADE20K-layout data, the paper's 160k-iteration schedule."""

    name, title, unit = "segment", "UperNet", "update"

    def __init__(self, cfg: SegmentConfig, rt: Runtime):
        transform = TrainTransform(cfg.crop_size, cfg.scale, cfg.ratio_range)
        train_set = ADE20K(cfg.ade20k, cfg.train_split, transform, cfg.num_classes, cfg.max_images)
        val_set = (
            ADE20K(cfg.ade20k, cfg.val_split, None, cfg.num_classes, cfg.max_images) if cfg.eval_every >= 0 else None
        )
        super().__init__(cfg, rt, train_set, val_set, cfg.model_args())
        self.criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)

    def model(self) -> nn.Module:
        cfg, rt = self.cfg, self.rt
        model = upernet(**self.model_args, backbone_weights=cfg.backbone_weights, drop_path_rate=cfg.drop_path_rate)
        if rt.distributed and rt.device.type == "cuda":  # SyncBN is GPU-only; CPU/gloo runs keep per-process BN
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        torch.backends.cudnn.benchmark = rt.device.type == "cuda"  # fixed 512x512 crops: let cuDNN pick its kernels
        return model

    def loss(self, forward: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, labels = (t.to(self.rt.device, non_blocking=True) for t in batch)
        out = forward(images)
        terms = dict(decode=self.criterion(out["out"], labels))
        if "aux" in out:
            terms["aux"] = self.cfg.aux_weight * self.criterion(out["aux"], labels)
        return terms

    def decay(self, optimizer: torch.optim.Optimizer, updates_per_epoch: int) -> PolynomialLR:
        return PolynomialLR(optimizer, total_iters=self.cfg.iterations, power=self.cfg.power)

    def evaluate(self, model: nn.Module, runtime: Runtime) -> dict[str, Any]:
        cfg = self.cfg
        return evaluate_segmenter(
            model, self.val_set, runtime, scale=cfg.scale, mode=cfg.eval_mode, crop_size=cfg.crop_size
        )


def train_segmenter(cfg: SegmentConfig) -> dict[str, Any]:
    """Train UperNet as `cfg` says; writes config.yaml, config.json, log.jsonl, last.pt and metrics.json into
    cfg.output.

    Returns {"losses": [per-step total loss], "metrics": last single-scale metrics, "checkpoint": path}
    (metrics and checkpoint only on the main process).

    Example:
        >>> train_segmenter(SegmentConfig(ade20k="/datasets/ADEChallengeData2016", output="runs/seg"))  # doctest: +SKIP
    """
    if not cfg.ade20k:
        raise UserError("segmentation needs ADE20K-layout data: pass --ade20k DIR (images/, annotations/)")
    if cfg.batch_size < 2:
        raise UserError("UperNet's BatchNorm needs at least 2 images per batch; use --batch-size 2 or more")
    if cfg.eval_mode not in ("whole", "slide"):
        raise UserError(f"eval mode must be 'whole' or 'slide', got {cfg.eval_mode!r}")
    return train_dense(cfg, Segmentation(cfg, setup(cfg)), updates=cfg.iterations)


def slide_logits(model: nn.Module, x: torch.Tensor, crop_size: int, stride: int) -> torch.Tensor:
    """Logits of overlapping crop_size windows, averaged where they overlap (mmseg's `slide_inference`)."""
    h, w = x.shape[-2:]
    rows = max(h - crop_size + stride - 1, 0) // stride + 1
    cols = max(w - crop_size + stride - 1, 0) // stride + 1
    total, count = None, x.new_zeros(1, 1, h, w)
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop_size, h), min(c * stride + crop_size, w)
            y1, x1 = max(y2 - crop_size, 0), max(x2 - crop_size, 0)
            logits = model(x[..., y1:y2, x1:x2])["out"].float()
            if total is None:
                total = x.new_zeros(x.shape[0], logits.shape[1], h, w, dtype=torch.float32)
            total[..., y1:y2, x1:x2] += logits
            count[..., y1:y2, x1:x2] += 1
    return total / count


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    image: torch.Tensor,
    scale: Sequence[int] = (2048, 512),
    ratios: Sequence[float] = (1.0,),
    flip: bool = False,
    mode: str = "whole",
    crop_size: int = 512,
    stride: int | None = None,
    rt: Runtime | None = None,
) -> torch.Tensor:
    """Class probabilities (K, H, W) for one uint8 (3, H, W) image, averaged over `ratios` x (flip)."""
    device = rt.device if rt else next(model.parameters()).device
    h, w = image.shape[-2:]
    total, n = None, 0
    for ratio in ratios:
        x = normalize(v2.functional.resize(image, rescaled_size(h, w, scale, ratio), antialias=True))[None].to(device)
        for flipped in (False, True) if flip else (False,):
            xi = x.flip(-1) if flipped else x
            with rt.autocast() if rt else torch.autocast(device.type, enabled=False):
                logits = (
                    model(xi)["out"]
                    if mode == "whole"
                    else slide_logits(model, xi, crop_size, stride or crop_size * 2 // 3)
                )
            logits = logits.float().flip(-1) if flipped else logits.float()
            probs = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).softmax(1)[0]
            total, n = (probs if total is None else total + probs), n + 1
    return total / n


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts, rows = true class, columns = predicted; label 255 ignored."""
    valid = label != IGNORE_INDEX
    index = label[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_metrics(cm: torch.Tensor) -> dict[str, Any]:
    """mIoU, mean class accuracy and pixel accuracy (fractions) from a confusion matrix; classes absent from both
    labels and predictions are left out of the means, as in mmsegmentation."""
    cm = cm.double()
    tp, gt, pred = cm.diag(), cm.sum(1), cm.sum(0)
    iou = tp / (gt + pred - tp)  # nan where the class is absent from both
    acc = tp / gt
    return dict(
        mIoU=float(iou.nanmean()),
        mAcc=float(acc.nanmean()),
        aAcc=float(tp.sum() / cm.sum().clamp(min=1)),
        IoU=[None if v != v else round(float(v), 6) for v in iou],
    )


@torch.no_grad()
def evaluate_segmenter(
    model: nn.Module,
    dataset: ADE20K,
    rt: Runtime | None = None,
    multi_scale: bool = False,
    flip: bool | None = None,
    scale: Sequence[int] = (2048, 512),
    mode: str = "whole",
    crop_size: int = 512,
) -> dict[str, Any]:
    """mIoU of `model` on `dataset` (images untransformed); `multi_scale` = ratios 0.5..1.75 with flips.

    Returns {"mIoU", "mAcc", "aAcc"} as fractions and per-class "IoU" (main process; {} on the others).

    Example:
        >>> evaluate_segmenter(model, ADE20K("/datasets/ADEChallengeData2016", "validation"))["mIoU"]  # doctest: +SKIP
    """
    if mode not in ("whole", "slide"):
        raise UserError(f"eval mode must be 'whole' or 'slide', got {mode!r}")
    rt = rt or setup_runtime(str(next(model.parameters()).device), "none")
    flip = multi_scale if flip is None else flip
    ratios = MULTI_SCALE_RATIOS if multi_scale else (1.0,)
    num_classes = model.num_classes
    was_training = model.training
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for i in range(rt.rank, len(dataset), rt.world_size):
        image, label = dataset[i]
        probs = predict_probs(model, image, scale, ratios, flip, mode, crop_size, rt=rt)
        cm += confusion_matrix(probs.argmax(0).cpu(), label, num_classes)
    model.train(was_training)
    cms = gather_objects(cm)
    if not rt.is_main:
        return {}
    return segmentation_metrics(sum(cms))


def load_segmenter(checkpoint: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the UperNet a `mambaout segment train` checkpoint holds; returns (model in eval mode, checkpoint)."""
    return load_dense_model(checkpoint, "segment", upernet, device)


def eval_checkpoint(
    checkpoint: str,
    ade20k: str,
    split: str = "validation",
    multi_scale: bool = False,
    flip: bool | None = None,
    mode: str | None = None,
    device: str | None = None,
    max_images: int | None = None,
    amp: str = "auto",
) -> dict[str, Any]:
    """`mambaout segment eval`: mIoU of a trained checkpoint on `<ade20k>` (the scale and crop it was trained with)."""
    rt = setup_runtime(device, amp)
    model, ckpt = load_segmenter(checkpoint, rt.device)
    cfg = ckpt["config"]
    dataset = ADE20K(ade20k, split, None, model.num_classes, max_images)
    return evaluate_segmenter(
        model, dataset, rt, multi_scale, flip, tuple(cfg["scale"]), mode or cfg["eval_mode"], cfg["crop_size"]
    )
