"""The training recipe as data: the paper's ImageNet numbers, a fine-tuning preset and the built-in digits task.

A `Recipe` is resolved in layers, later ones winning: the dataclass defaults (the paper's recipe, PAPER.md §4) →
the preset (`imagenet`, `finetune`, `digits`) → the model's peak drop-path rate from the variant table → a YAML
file (`--config`) → command-line flags. The learning rate follows the linear scaling rule the paper uses:
lr = base_lr × global batch / 1024, where global batch = per-device batch × processes × gradient accumulation,
so a run on 2 GPUs with accumulation 16 gets the same lr as the authors' 32 GPUs. `to_yaml` writes the resolved
recipe with the derived numbers; a saved `config.yaml` can be passed back as `--config`.

Example:
    >>> r = resolve_recipe({"model": "mambaout_tiny", "data": "/datasets/imagenet", "batch_size": 128, "grad_accum": 4})
    >>> r.global_batch(world_size=8), r.resolved_lr(world_size=8), r.drop_path
    (4096, 0.004, 0.2)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mambaout.engine.config import check_keys, coerce, fields_of, load_yaml, option, to_dict
from mambaout.errors import UserError


def _f(default: Any, help: str, group: str, choices: tuple | None = None) -> Any:
    return option(default, help, group, choices)


@dataclass
class Recipe:
    """Every setting of a training run. Defaults are the paper's ImageNet-1k recipe (MambaOut, Table 5)."""

    preset: str = _f(
        "imagenet",
        "imagenet (the paper), finetune (own data), digits (built-in)",
        "recipe",
        ("imagenet", "finetune", "digits"),
    )
    # model
    model: str = _f("mambaout_tiny", "variant to train (`mambaout models` lists them)", "model")
    pretrained: str | None = _f(None, "weights to start from: .pth/.safetensors path, URL or hf-hub:id", "model")
    num_classes: int | None = _f(None, "classifier size (default: the number of class folders)", "model")
    drop_path: float | None = _f(None, "peak stochastic-depth rate (default: the paper's for the model)", "model")
    drop: float = _f(0.0, "dropout before the classifier", "model")
    # data
    data: str | None = _f(None, "folder with train/ and val/ (ImageNet layout); none: built-in digits", "data")
    input_size: int = _f(224, "training and evaluation resolution (square)", "data")
    batch_size: int = _f(128, "images per device per step", "data")
    workers: int = _f(8, "DataLoader worker processes per device", "data")
    max_bad_images: int = _f(100, "stop when more images than this cannot be read", "data")
    train_images: int = _f(0, "use a fixed random subset of this many training images (0: all)", "data")
    val_images: int = _f(0, "use a fixed random subset of this many validation images (0: all)", "data")
    # optimisation
    epochs: int = _f(300, "training epochs", "optimisation")
    warmup_epochs: int = _f(20, "linear warm-up epochs (from warmup_lr)", "optimisation")
    base_lr: float = _f(1e-3, "lr per 1024 images of global batch (scaled linearly)", "optimisation")
    lr: float | None = _f(None, "absolute peak lr (default: base_lr x global batch / 1024)", "optimisation")
    warmup_lr: float = _f(1e-6, "lr at the start of warm-up", "optimisation")
    min_lr: float = _f(1e-5, "lr at the end of the cosine schedule", "optimisation")
    opt: str = _f("adamw", "timm optimizer name", "optimisation")
    opt_betas: tuple[float, float] = _f((0.9, 0.999), "Adam betas", "optimisation")
    opt_eps: float = _f(1e-8, "Adam epsilon", "optimisation")
    weight_decay: float = _f(0.05, "decoupled weight decay (not on norms, biases, no_weight_decay())", "optimisation")
    layer_decay: float | None = _f(None, "layer-wise lr decay for fine-tuning, e.g. 0.8", "optimisation")
    clip_grad: float | None = _f(None, "clip the gradient norm to this value", "optimisation")
    grad_accum: int = _f(1, "micro-batches per optimizer update", "optimisation")
    # augmentation
    auto_augment: str | None = _f("rand-m9-mstd0.5-inc1", "timm RandAugment policy (none: off)", "augmentation")
    color_jitter: float = _f(0.4, "colour jitter strength (timm skips it when RandAugment is on)", "augmentation")
    reprob: float = _f(0.25, "random erasing probability", "augmentation")
    hflip: float = _f(0.5, "horizontal flip probability", "augmentation")
    scale: tuple[float, float] = _f((0.08, 1.0), "random resized crop area range", "augmentation")
    train_interpolation: str = _f("random", "resize interpolation for training crops", "augmentation")
    mixup: float = _f(0.8, "Mixup alpha (0: off)", "augmentation")
    cutmix: float = _f(1.0, "CutMix alpha (0: off)", "augmentation")
    mixup_switch_prob: float = _f(0.5, "probability of CutMix instead of Mixup when both are on", "augmentation")
    smoothing: float = _f(0.1, "label smoothing", "augmentation")
    # EMA
    model_ema: bool = _f(False, "keep an exponential moving average of the weights (the paper: no)", "ema")
    model_ema_decay: float = _f(0.9999, "EMA decay per update", "ema")
    # hardware
    device: str = _f("auto", "auto (cuda if available), cpu, cuda, cuda:1", "hardware")
    amp: str = _f(
        "auto",
        "mixed precision: auto (bf16 on CUDA, none on CPU), bf16, fp16, none",
        "hardware",
        ("auto", "bf16", "fp16", "none"),
    )
    channels_last: bool = _f(False, "channels-last memory format", "hardware")
    compile: bool = _f(False, "torch.compile the model", "hardware")
    threads: int = _f(0, "CPU threads for tensor ops per process (0: torch's default, one per core)", "hardware")
    # run
    seed: int = _f(0, "seed of initialisation, data order and augmentation", "run")
    output: str | None = _f(None, "run folder (default runs/<model>-<timestamp>)", "run")
    save_every_steps: int = _f(0, "also checkpoint every N optimizer updates (0: once per epoch)", "run")
    tensorboard: bool = _f(True, "write TensorBoard logs to <run>/tensorboard", "run")
    plot: bool = _f(False, "draw curves.png when training ends", "run")

    # --- derived numbers --------------------------------------------------------------------------------------

    def global_batch(self, world_size: int = 1) -> int:
        """Images per optimizer update over all processes."""
        return self.batch_size * world_size * self.grad_accum

    def resolved_lr(self, world_size: int = 1) -> float:
        """The peak learning rate: `lr` if set, else base_lr x global batch / 1024."""
        if self.lr is not None:
            return self.lr
        return round(self.base_lr * self.global_batch(world_size) / LR_BASE_BATCH, 12)

    def derived(self, world_size: int = 1, **extra: Any) -> dict[str, Any]:
        return dict(
            world_size=world_size,
            global_batch=self.global_batch(world_size),
            lr=self.resolved_lr(world_size),
            lr_rule="lr as given" if self.lr is not None else f"base_lr x global_batch / {LR_BASE_BATCH}",
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_yaml(self, world_size: int = 1, **extra: Any) -> str:
        """The resolved recipe as YAML, with the derived global batch and lr under `derived:` (ignored on load)."""
        head = (
            f"# mambaout train: resolved recipe (preset {self.preset!r}); global batch "
            f"{self.batch_size} per device x {world_size} process(es) x {self.grad_accum} accumulation\n"
        )
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        return head + body + yaml.safe_dump({"derived": self.derived(world_size, **extra)}, sort_keys=False)


LR_BASE_BATCH = 1024

# Each preset lists what differs from the dataclass defaults (the paper's ImageNet recipe).
PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {},
    # Own data, starting from ImageNet weights: lower lr, 30 epochs, lighter augmentation, no Mixup/CutMix.
    "finetune": dict(
        epochs=30,
        warmup_epochs=5,
        base_lr=5e-4,
        min_lr=1e-6,
        auto_augment="rand-m7-mstd0.5-inc1",
        reprob=0.0,
        mixup=0.0,
        cutmix=0.0,
        workers=4,
    ),
    # The built-in task: 32x32 digits, a pico model, minutes on a CPU. No flips (a flipped 7 is not a 7), mild crops.
    "digits": dict(
        model="mambaout_pico",
        data=None,
        input_size=32,
        batch_size=64,
        workers=0,
        epochs=12,
        warmup_epochs=1,
        base_lr=2e-2,  # 1.25e-3 at batch 64
        min_lr=1e-5,
        weight_decay=0.05,
        auto_augment=None,
        color_jitter=0.0,
        reprob=0.0,
        hflip=0.0,
        scale=(0.6, 1.0),
        train_interpolation="bicubic",
        mixup=0.0,
        cutmix=0.0,
        smoothing=0.1,
        # Ops this small gain nothing from splitting across cores, and on a busy machine two spinning OpenMP
        # threads made the run 10x slower (measured: 7.5 min vs 45 s on 2 shared cores).
        threads=1,
    ),
}

FIELDS = fields_of(Recipe)


def resolve_recipe(
    overrides: dict[str, Any] | None = None, config: str | os.PathLike | dict[str, Any] | None = None
) -> Recipe:
    """Defaults → preset → the model's drop path → `config` (YAML path or dict) → `overrides` (flags).

    Without an explicit preset: `digits` when no data folder is given, `finetune` when pretrained weights are,
    else `imagenet`.

    Example:
        >>> resolve_recipe().model, resolve_recipe().input_size  # no arguments: the built-in digits task
        ('mambaout_pico', 32)
        >>> resolve_recipe({"data": "my_folder", "pretrained": "femto.pth", "model": "mambaout_femto"}).epochs
        30
    """
    from_file = load_yaml(config) if isinstance(config, (str, os.PathLike)) else dict(config or {})
    check_keys(
        Recipe, from_file, f"config file {config}" if isinstance(config, (str, os.PathLike)) else "the config", "recipe"
    )
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}  # argparse leaves unset flags at None
    check_keys(Recipe, flags, "the arguments", "recipe")
    given = {k: coerce(Recipe, k, v, "recipe") for k, v in {**from_file, **flags}.items()}
    preset = given.get("preset") or (
        "digits" if not given.get("data") else "finetune" if given.get("pretrained") else "imagenet"
    )
    recipe = Recipe(**{"preset": preset, **PRESETS[preset], **given})
    from mambaout.models.factory import check_model_name
    from mambaout.models.variants import VARIANTS

    recipe.model = check_model_name(recipe.model)
    if recipe.drop_path is None:
        recipe.drop_path = VARIANTS[recipe.model].drop_path
    if "warmup_epochs" not in given and recipe.warmup_epochs >= recipe.epochs:
        recipe.warmup_epochs = recipe.epochs - 1  # a short run asked for with --epochs keeps one epoch of decay
    validate(recipe)
    return recipe


def resume_recipe(run: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Recipe:
    """The recipe of the run in folder `run` (its config.yaml), with `overrides` (e.g. {"epochs": 400}) on top.

    Example:
        >>> train(resume_recipe("runs/s"), resume="runs/s")  # `mambaout train --resume runs/s`  # doctest: +SKIP
    """
    run = Path(run)
    if not (run / "last.pt").is_file():
        raise UserError(f"{run} holds no last.pt to resume from; give the run folder of an earlier `mambaout train`")
    return resolve_recipe({**(overrides or {}), "output": str(run)}, run / "config.yaml")


def validate(recipe: Recipe) -> None:
    """One sentence per impossible combination of settings."""
    positive = ("batch_size", "grad_accum", "epochs", "input_size")
    for name in positive:
        if getattr(recipe, name) < 1:
            raise UserError(f"{name} must be at least 1, got {getattr(recipe, name)}")
    if not 0 <= recipe.warmup_epochs < recipe.epochs:
        raise UserError(f"warmup_epochs ({recipe.warmup_epochs}) must be at least 0 and below epochs ({recipe.epochs})")
    if (recipe.mixup > 0 or recipe.cutmix > 0) and recipe.batch_size % 2:
        raise UserError(f"Mixup/CutMix need an even per-device batch; batch_size is {recipe.batch_size}")
    for name in ("drop_path", "drop", "reprob", "hflip", "smoothing", "mixup_switch_prob"):
        value = getattr(recipe, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise UserError(f"{name} must be between 0 and 1, got {value}")
    if recipe.layer_decay is not None and not 0.0 < recipe.layer_decay <= 1.0:
        raise UserError(f"layer_decay must be in (0, 1], e.g. 0.8, got {recipe.layer_decay}")
    for name in ("max_bad_images", "save_every_steps", "workers", "train_images", "val_images", "threads"):
        if getattr(recipe, name) < 0:
            raise UserError(f"{name} must be 0 or more, got {getattr(recipe, name)}")
