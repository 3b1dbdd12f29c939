"""The settings of a detection or segmentation run, stated once: `mambaout detect train` and `segment train` are
generated from these dataclasses (every field a flag, `--config x.yaml`, `--print-config`), and every run writes the
resolved one to `config.json` and into its checkpoints. Defaults are the paper's recipes (§5): mmdetection's Mask
R-CNN 1x with AdamW, mmsegmentation's UperNet 160k with AdamW.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mambaout.engine.config import AMP_CHOICES, option


@dataclass
class DenseConfig:
    """The settings every dense run has; `DetectConfig` and `SegmentConfig` add their task's."""

    backbone: str = option("mambaout_tiny", "MambaOut variant of the backbone", "model")
    backbone_weights: str | None = option(None, "ImageNet weights for the backbone: .pth/.safetensors, URL, hf-hub:id")
    mixer: str = option("conv", "token mixer of the backbone blocks (the study's mixers)", "model")
    drop_path_rate: float | None = option(None, "backbone drop-path rate (default: its ImageNet rate)", "model")
    output: str = option("runs/dense", "run folder: config.json, log.jsonl, last.pt, metrics.json", "run")
    batch_size: int = option(16, "global batch over all processes", "optimisation")
    lr: float = option(1e-4, "AdamW learning rate", "optimisation")
    weight_decay: float = option(0.05, "AdamW weight decay (not on norms and biases)", "optimisation")
    warmup_iters: int = option(500, "linear warm-up iterations", "optimisation")
    warmup_ratio: float = option(1e-3, "lr at the start of warm-up, as a fraction of lr", "optimisation")
    amp: str = option("auto", "mixed precision (auto: bf16 on GPUs that have it)", "hardware", AMP_CHOICES)
    device: str | None = option(None, "cpu, cuda or cuda:N (default: cuda if present)", "hardware")
    workers: int = option(4, "data loader processes per GPU", "hardware")
    log_every: int = option(50, "iterations between log lines", "run")
    checkpoint_every: int = option(0, "iterations between writes of last.pt (0: at each epoch end and the last)", "run")
    max_images: int | None = option(None, "use only the first N images of each split", "data")
    seed: int = option(0, "seed of initialisation, data order and augmentation", "run")
    resume: bool = option(False, "continue from <output>/last.pt if it exists", "run")


@dataclass
class DetectConfig(DenseConfig):
    """Everything a detection run depends on; written to <output>/config.json and into every checkpoint."""

    coco: str = option("", "folder with annotations/instances_<split>.json and <split>/ images", "data")
    output: str = option("runs/det", "run folder: config.json, log.jsonl, last.pt, metrics.json", "run")
    num_classes: int | None = option(None, "classes incl. background (default: the categories + 1)", "model")
    train_split: str = option("train2017", "training split", "data")
    val_split: str = option("val2017", "validation split", "data")
    epochs: int = option(12, "training epochs (the 1x schedule)", "optimisation")
    lr_steps: tuple[int, ...] = option((8, 11), "epochs after which the lr drops x0.1", "optimisation")
    min_size: tuple[int, ...] = option((800,), "shorter side; several values: multi-scale training", "data")
    max_size: int = option(1333, "longer side at most", "data")
    fpn_channels: int = option(256, "FPN width", "model")
    box_fc_channels: int = option(1024, "box head width", "model")
    mask_channels: int = option(256, "mask head width", "model")
    eval_every: int = option(1, "epochs between COCO evaluations (0: at the end, -1: never)", "run")
    max_steps: int | None = option(None, "stop after N iterations (smoke runs)", "run")
    model_overrides: dict[str, Any] = option({}, "more torchvision MaskRCNN keyword arguments (YAML only)", "model")

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


@dataclass
class SegmentConfig(DenseConfig):
    """Everything a segmentation run depends on; written to <output>/config.json and into every checkpoint."""

    ade20k: str = option("", "the ADEChallengeData2016 folder (images/, annotations/)", "data")
    output: str = option("runs/seg", "run folder: config.json, log.jsonl, last.pt, metrics.json", "run")
    num_classes: int = option(150, "classes (ADE20K: 150)", "model")
    train_split: str = option("training", "training split", "data")
    val_split: str = option("validation", "validation split", "data")
    iterations: int = option(160_000, "training iterations", "optimisation")
    weight_decay: float = option(0.01, "AdamW weight decay (not on norms and biases)", "optimisation")
    warmup_iters: int = option(1500, "linear warm-up iterations", "optimisation")
    warmup_ratio: float = option(1e-6, "lr at the start of warm-up, as a fraction of lr", "optimisation")
    power: float = option(1.0, "poly decay power", "optimisation")
    crop_size: int = option(512, "training crop side", "data")
    scale: tuple[int, int] = option((2048, 512), "rescale target before the random ratio", "data")
    ratio_range: tuple[float, float] = option((0.5, 2.0), "random rescale ratio range", "data")
    channels: int = option(512, "UperNet decode head width", "model")
    aux_channels: int = option(256, "auxiliary FCN head width (0: no auxiliary head)", "model")
    aux_weight: float = option(0.4, "weight of the auxiliary loss", "optimisation")
    eval_every: int = option(16_000, "iterations between evaluations (0: at the end, -1: never)", "run")
    checkpoint_every: int = option(16_000, "iterations between writes of last.pt (and after the last)", "run")
    eval_mode: str = option("whole", "evaluation: whole image or slide windows", "run", ("whole", "slide"))

    def model_args(self) -> dict[str, Any]:
        return dict(
            backbone=self.backbone,
            num_classes=self.num_classes,
            mixer=self.mixer,
            channels=self.channels,
            aux_channels=self.aux_channels,
        )
