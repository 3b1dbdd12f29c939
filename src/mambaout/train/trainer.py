"""`train(recipe)`: image classification as a task of the engine's driver (`mambaout.engine.run`).

The task supplies what is particular to classification: the data (checked before anything is written), the timm
model, the recipe's optimizer and per-update cosine (in epochs), Mixup/CutMix and the loss, top-1/top-5 evaluation
and the weights exported after each epoch; the driver does the rest (processes, DDP, EMA, resume, records). The run
folder receives `config.yaml`, `classes.txt`, `summary.csv`, `log.jsonl`, `metrics.json`, `tensorboard/`, `last.pt`
(everything, atomically, every epoch and optionally every N updates), `last.safetensors` and `best.safetensors`
(weights for `create_model(pretrained=...)`).

Determinism: initial weights from `seed`; data order from (seed, epoch); augmentation from (seed, epoch, index);
the main-process generators (drop path, Mixup) are reseeded from (seed, epoch, rank) at each epoch start and
restored from the checkpoint for a mid-epoch restart. A resumed run therefore repeats the uninterrupted one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from mambaout.data import Splits, batch_mixup, build_splits, eval_transform, train_transform
from mambaout.engine.checkpoint import export_weights
from mambaout.engine.distributed import broadcast_object, close_processes
from mambaout.engine.run import OptimizerSpec, RunConfig, RunState, ScheduleSpec, Task, run
from mambaout.engine.runtime import AMP_NAMES, Runtime, intra_op_threads, setup_runtime
from mambaout.errors import UserError
from mambaout.models.factory import create_model
from mambaout.models.variants import pretrained_cfg
from mambaout.train.evaluation import evaluate
from mambaout.train.recipe import Recipe


@dataclass
class RunResult:
    run_dir: Path
    epochs: int
    best_top1: float
    best_epoch: int
    last: dict[str, float]
    seconds: float


def default_run_dir(model: str) -> Path:
    return Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def recipe_optimizer(recipe: Recipe, lr: float) -> OptimizerSpec:
    """The recipe's timm optimizer (weight decay off for 1-D and `no_weight_decay()` parameters, optional layer
    decay via `group_matcher`)."""
    adam_like = "adam" in recipe.opt.lower() or recipe.opt.lower() in ("lamb", "lambw", "lion")
    betas = dict(betas=tuple(recipe.opt_betas), eps=recipe.opt_eps) if adam_like else {}
    return OptimizerSpec(recipe.opt, lr, recipe.weight_decay, recipe.layer_decay, kwargs=betas)


def recipe_schedule(recipe: Recipe) -> ScheduleSpec:
    """The recipe's cosine, counted in epochs and stepped per update."""
    return ScheduleSpec(recipe.warmup_epochs, recipe.warmup_lr, recipe.min_lr, unit="epoch")


def classification_loss(
    recipe: Recipe, num_classes: int, device: torch.device
) -> Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """The training step's loss for an (images, targets) batch: to the device, the recipe's Mixup/CutMix, forward,
    cross-entropy (soft targets under Mixup, which smooths them itself; else label smoothing if the recipe has it)."""
    mixup = batch_mixup(num_classes, recipe.mixup, recipe.cutmix, recipe.mixup_switch_prob, recipe.smoothing)
    if mixup is not None:
        loss_fn: nn.Module = SoftTargetCrossEntropy()
    elif recipe.smoothing > 0:
        loss_fn = LabelSmoothingCrossEntropy(recipe.smoothing)
    else:
        loss_fn = nn.CrossEntropyLoss()

    def loss(forward: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, targets = batch
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if recipe.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            images, targets = mixup(images, targets)
        return loss_fn(forward(images), targets)

    return loss


class Classification(Task):
    """A timm classifier on `splits`, trained as `recipe` says.

    Example:
        >>> task = Classification(recipe, rt, Path("runs/x"), splits)  # doctest: +SKIP
        >>> run(task, RunConfig(epochs=recipe.epochs, batch_size=recipe.batch_size, runtime=rt))  # doctest: +SKIP
    """

    best = "top1"

    def __init__(self, recipe: Recipe, rt: Runtime, run_dir: Path, splits: Splits):
        self.recipe, self.rt, self.run_dir, self.splits, self.resuming = recipe, rt, run_dir, splits, False
        self.num_classes = recipe.num_classes or len(splits.classes)
        if self.num_classes < len(splits.classes):
            raise UserError(
                f"num_classes {self.num_classes} is below the {len(splits.classes)} classes found in the data"
            )
        self.lr = recipe.resolved_lr(rt.world_size)
        self.optimizer = recipe_optimizer(recipe, self.lr)
        self.schedule = recipe_schedule(recipe)
        self.loss = classification_loss(recipe, self.num_classes, rt.device)
        self.val_loader = rt.eval_loader(splits.val, recipe.batch_size, recipe.workers)
        self.advice = f"lower --lr/--base-lr, set --clip-grad 1.0 or use --amp bf16, then --resume {run_dir}"

    def model(self) -> nn.Module:
        r = self.recipe
        model = create_model(
            r.model,
            pretrained=r.pretrained if not self.resuming else None,
            num_classes=self.num_classes,
            drop_path_rate=r.drop_path,
            drop_rate=r.drop,
        )
        return model.to(memory_format=torch.channels_last) if r.channels_last else model

    def train_data(self):
        return self.splits.train

    def evaluate(self, model: nn.Module, runtime: Runtime) -> dict[str, float]:
        m = evaluate(model, self.val_loader, runtime.device, runtime.amp, self.recipe.channels_last)
        return dict(val_loss=m["loss"], top1=m["top1"], top5=m["top5"])

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        ema = f"  ema top-1 {metrics['ema_top1']:5.1f}%" if "ema_top1" in metrics else ""
        return f"val loss {metrics['val_loss']:.4f}  top-1 {metrics['top1']:5.1f}%  top-5 {metrics['top5']:5.1f}%{ema}"

    def config(self, runtime: Runtime) -> str:
        amp = AMP_NAMES.get(runtime.amp, "none")
        return self.recipe.to_yaml(runtime.world_size, device=str(runtime.device), amp=amp)

    def checkpoint_extra(self) -> dict[str, Any]:
        return dict(config=self.recipe.to_dict(), classes=self.splits.classes)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint["classes"] != self.splits.classes:
            raise UserError(
                f"the classes of {self.splits.name} differ from those {self.run_dir} was trained on; resume on the "
                "same data"
            )
        self.resuming = True

    def on_start(self, run: RunState) -> None:
        r, rt, splits, p = self.recipe, self.rt, self.splits, run.progress
        if rt.is_main:
            (self.run_dir / "classes.txt").write_text("\n".join(splits.classes) + "\n")
        params = sum(x.numel() for x in run.model.parameters())
        rt.log(
            f"{'resuming' if run.resumed else 'training'} {r.model} ({params / 1e6:.2f}M params) on {splits.name}: "
            f"{len(splits.train)} train / {len(splits.val)} val images, {_plural(len(splits.classes), 'class')}, "
            f"{_plural(r.epochs, 'epoch')} of {_plural(run.updates_per_epoch, 'update')}, global batch "
            f"{r.global_batch(rt.world_size)} ({r.batch_size} x {rt.world_size} process(es) x "
            f"{r.grad_accum}), lr {self.lr:.3g}, {rt.device}{', ' + rt.precision if rt.amp else ''}"
            f"{f', from epoch {p.epoch + 1} update {p.updates_done}' if run.resumed else ''} -> {self.run_dir}"
        )
        if r.warmup_epochs >= r.epochs - 1 and r.epochs > 1 and r.preset != "digits":
            rt.log(
                f"warning: {r.warmup_epochs} warm-up epochs of {r.epochs} leave the cosine almost no room; "
                "set --warmup-epochs lower (the ImageNet preset warms up for 20 of 300)"
            )
        if p.epoch >= r.epochs:
            rt.log(f"{self.run_dir} already finished its {r.epochs} epochs; pass --epochs N to train longer")

    def on_update(self, run: RunState, loss: float) -> None:
        self.splits.check_bad_images()

    def on_evaluation(self, run: RunState, metrics: dict[str, Any], improved: bool) -> None:
        """The weights as safetensors: last, best (by top-1) and the EMA's."""
        if not self.rt.is_main:
            return
        r = self.recipe
        meta = dict(model=r.model, num_classes=self.num_classes, input_size=r.input_size)
        meta.update(epoch=run.progress.epoch, top1=f"{metrics['top1']:.3f}")
        weights = run.model.state_dict()
        export_weights(self.run_dir / "last.safetensors", weights, meta)
        if improved:
            export_weights(self.run_dir / "best.safetensors", weights, meta)
        if run.ema is not None:
            export_weights(self.run_dir / "ema.safetensors", run.ema.module.state_dict(), dict(meta, ema="true"))


def train(recipe: Recipe, resume: str | os.PathLike | None = None) -> RunResult:
    """Train as the recipe says (one process, or every process of a torchrun launch); `resume` is a run folder.

    Example:
        >>> from mambaout.train import resolve_recipe, train
        >>> result = train(resolve_recipe({"epochs": 2}))  # the built-in digits  # doctest: +SKIP
        >>> result.best_top1, result.run_dir  # doctest: +SKIP
        >>> train(resume_recipe(result.run_dir, {"epochs": 4}), resume=result.run_dir)  # two more  # doctest: +SKIP
    """
    if resume is not None and recipe.output and Path(recipe.output) != Path(resume):
        raise UserError(f"resuming {resume} writes into it; drop --output {recipe.output} (or give the same folder)")
    if resume is not None and not (Path(resume) / "last.pt").is_file():
        raise UserError(f"no checkpoint at {Path(resume) / 'last.pt'}; --resume takes a run folder that holds last.pt")
    with intra_op_threads(recipe.threads):
        rt = setup_runtime(recipe.device, recipe.amp)
        try:
            return _train(recipe, rt, Path(resume) if resume else None)
        finally:
            close_processes()


def _train(recipe: Recipe, rt: Runtime, resume: Path | None) -> RunResult:
    run_dir = resume or Path(broadcast_object(str(recipe.output or default_run_dir(recipe.model))))
    # Data first: every layout mistake is reported before a file is written.
    cfg = pretrained_cfg(recipe.model)
    norm = dict(mean=cfg["mean"], std=cfg["std"])
    splits = build_splits(
        recipe.data,
        train_transform(
            recipe.input_size,
            scale=recipe.scale,
            hflip=recipe.hflip,
            auto_augment=recipe.auto_augment,
            color_jitter=recipe.color_jitter,
            reprob=recipe.reprob,
            interpolation=recipe.train_interpolation,
            **norm,
        ),
        eval_transform(recipe.input_size, crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"], **norm),
        seed=recipe.seed,
        digits_size=recipe.input_size,
        max_bad_images=recipe.max_bad_images,
        bad_images_log=run_dir / "bad_images.txt",
        train_images=recipe.train_images,
        val_images=recipe.val_images,
    )
    if len(splits.classes) < 2:
        raise UserError(f"{splits.name} has {len(splits.classes)} class; a classifier needs at least 2 class folders")
    if len(splits.train) < recipe.global_batch(rt.world_size):
        raise UserError(
            f"the {len(splits.train)} training images do not fill one global batch of "
            f"{recipe.global_batch(rt.world_size)}; lower --batch-size or --grad-accum"
        )

    task = Classification(recipe, rt, run_dir, splits)
    config = RunConfig(
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        grad_accum=recipe.grad_accum,
        clip_grad=recipe.clip_grad,
        ema=recipe.model_ema_decay if recipe.model_ema else None,
        runtime=rt,
        compile=recipe.compile,
        workers=recipe.workers,
        seed=recipe.seed,
        output=run_dir,
        resume=resume is not None,
        checkpoint_every=recipe.save_every_steps,
        progress="bar",
        desc=recipe.model,
        tensorboard=recipe.tensorboard,
    )
    result = run(task, config)
    if rt.is_main and recipe.plot:
        from mambaout.train.plot import plot_run

        plot_run(run_dir)
    best = result.best or dict(value=-1.0, epoch=0)
    return RunResult(run_dir, recipe.epochs, best["value"], best["epoch"], result.metrics, result.seconds)


def _plural(n: int, word: str) -> str:
    """'1 class', '2 classes', '1 epoch', '12 epochs'."""
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}es" if word.endswith(("s", "x")) else f"{n} {word}s"
