"""`train(recipe)`: a whole run, from a resolved recipe to a run folder of results.

Setup in the order a run needs it: processes (torchrun or one), data (checked before anything is written), model,
timm optimizer / scheduler / Mixup / loss / EMA, DDP, then the epochs. The run folder receives `config.yaml`,
`classes.txt`, `summary.csv`, `tensorboard/`, `last.pt` (everything, atomically, every epoch and optionally every
N updates), `last.safetensors` and `best.safetensors` (weights for `create_model(pretrained=...)`).

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
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch import nn
from tqdm import tqdm

from mambaout.data import batch_mixup, build_splits, eval_transform, train_transform
from mambaout.engine.checkpoint import export_weights, load_checkpoint, save_checkpoint
from mambaout.engine.distributed import broadcast_object, close_processes
from mambaout.engine.fit import Progress, fit, restore_training_state, training_state
from mambaout.engine.loop import TrainingDiverged, TrainParts
from mambaout.engine.records import RunRecords
from mambaout.engine.runtime import AMP_NAMES, Runtime, intra_op_threads, seed_all, setup_runtime
from mambaout.engine.schedule import cosine_per_update
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


def build_optimization(
    recipe: Recipe, model: nn.Module, num_classes: int, updates_per_epoch: int, lr: float
) -> tuple[torch.optim.Optimizer, Any, Any, nn.Module]:
    """The recipe's timm optimizer (weight decay off for 1-D and `no_weight_decay()` parameters, optional layer
    decay via `group_matcher`), per-update cosine schedule, Mixup/CutMix and loss.

    Example:
        >>> optimizer, scheduler, mixup, loss_fn = build_optimization(recipe, model, 1000, 312, 4e-3)  # doctest: +SKIP
    """
    adam_like = "adam" in recipe.opt.lower() or recipe.opt.lower() in ("lamb", "lambw", "lion")
    try:
        optimizer = create_optimizer_v2(
            model,
            opt=recipe.opt,
            lr=lr,
            weight_decay=recipe.weight_decay,
            layer_decay=recipe.layer_decay,
            **(dict(betas=tuple(recipe.opt_betas), eps=recipe.opt_eps) if adam_like else {}),
        )
    except (AssertionError, ValueError) as e:
        raise UserError(f"optimizer {recipe.opt!r} could not be created ({e}); use a timm name such as adamw") from e
    scheduler = cosine_per_update(
        optimizer, recipe.epochs, recipe.warmup_epochs, recipe.warmup_lr, recipe.min_lr, updates_per_epoch
    )
    mixup = batch_mixup(num_classes, recipe.mixup, recipe.cutmix, recipe.mixup_switch_prob, recipe.smoothing)
    if mixup is not None:
        loss_fn: nn.Module = SoftTargetCrossEntropy()  # Mixup makes smoothed soft targets itself
    elif recipe.smoothing > 0:
        loss_fn = LabelSmoothingCrossEntropy(recipe.smoothing)
    else:
        loss_fn = nn.CrossEntropyLoss()
    return optimizer, scheduler, mixup, loss_fn


def classification_loss(
    loss_fn: nn.Module, mixup: Any, device: torch.device, channels_last: bool = False
) -> Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """The training step's loss for an (images, targets) batch: to the device, Mixup/CutMix, forward, loss."""

    def loss(forward: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, targets = batch
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            images, targets = mixup(images, targets)
        return loss_fn(forward(images), targets)

    return loss


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
    with intra_op_threads(recipe.threads):
        rt = setup_runtime(recipe.device, recipe.amp)
        try:
            return _train(recipe, rt, Path(resume) if resume else None)
        finally:
            close_processes()


def _train(recipe: Recipe, rt: Runtime, resume: Path | None) -> RunResult:
    started = time.perf_counter()
    device, main = rt.device, rt.is_main
    checkpoint = load_checkpoint(resume / "last.pt") if resume else None
    run_dir = resume or Path(broadcast_object(str(recipe.output or default_run_dir(recipe.model))))
    if checkpoint is None and (run_dir / "last.pt").exists():
        raise UserError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --output"
        )

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
    num_classes = recipe.num_classes or len(splits.classes)
    if num_classes < len(splits.classes):
        raise UserError(f"num_classes {num_classes} is below the {len(splits.classes)} classes found in the data")
    if checkpoint is not None and checkpoint["classes"] != splits.classes:
        raise UserError(
            f"the classes of {splits.name} differ from those {run_dir} was trained on; resume on the same data"
        )
    loader = rt.train_loader(splits.train, recipe.batch_size, recipe.seed, recipe.workers)
    val_loader = rt.eval_loader(splits.val, recipe.batch_size, recipe.workers)
    updates_per_epoch = len(loader) // recipe.grad_accum
    if updates_per_epoch == 0:
        raise UserError(
            f"the {len(splits.train)} training images do not fill one global batch of "
            f"{recipe.global_batch(rt.world_size)}; lower --batch-size or --grad-accum"
        )

    # Model and optimisation, all from timm's factories.
    seed_all(recipe.seed)  # identical initial weights in every process and every run
    model = create_model(
        recipe.model,
        pretrained=recipe.pretrained if checkpoint is None else None,
        num_classes=num_classes,
        drop_path_rate=recipe.drop_path,
        drop_rate=recipe.drop,
    ).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = recipe.resolved_lr(rt.world_size)
    optimizer, scheduler, mixup, loss_fn = build_optimization(recipe, model, num_classes, updates_per_epoch, lr)
    scaler = torch.amp.GradScaler("cuda") if rt.amp == torch.float16 else None
    ema = ModelEmaV3(model, decay=recipe.model_ema_decay) if recipe.model_ema else None

    parts = TrainParts(
        model=model,
        forward=rt.wrap(model, compile=recipe.compile),
        optimizer=optimizer,
        loss=classification_loss(loss_fn, mixup, device, recipe.channels_last),
        schedule=lambda step: scheduler.step_update(num_updates=step),
        scaler=scaler,
        amp_dtype=rt.amp,
        device=device,
        grad_accum=recipe.grad_accum,
        ema=ema,
        clip_grad=recipe.clip_grad,
        world_size=rt.world_size,
    )

    # Where to start: a fresh run, or the state of the checkpoint.
    progress, best = Progress(), dict(top1=-1.0, epoch=0)
    if checkpoint is not None:
        progress = restore_training_state(parts, scheduler, checkpoint)
        best = dict(top1=checkpoint["best_top1"], epoch=checkpoint["best_epoch"])

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    records = RunRecords(run_dir, main, recipe.tensorboard, progress.epoch, progress.global_step)
    if main:
        (run_dir / "config.yaml").write_text(
            recipe.to_yaml(rt.world_size, device=str(device), amp=AMP_NAMES.get(rt.amp, "none"))
        )
        (run_dir / "classes.txt").write_text("\n".join(splits.classes) + "\n")

    def state(p: Progress) -> dict[str, Any]:
        extra = dict(best_top1=best["top1"], best_epoch=best["epoch"], config=recipe.to_dict(), classes=splits.classes)
        return training_state(parts, scheduler, p, **extra)

    weights_meta = dict(model=recipe.model, num_classes=num_classes, input_size=recipe.input_size)
    params = sum(p.numel() for p in model.parameters())
    records.print(
        f"{'resuming' if checkpoint else 'training'} {recipe.model} ({params / 1e6:.2f}M params) on {splits.name}: "
        f"{len(splits.train)} train / {len(splits.val)} val images, {_plural(len(splits.classes), 'class')}, "
        f"{_plural(recipe.epochs, 'epoch')} of {_plural(updates_per_epoch, 'update')}, global batch "
        f"{recipe.global_batch(rt.world_size)} ({recipe.batch_size} x {rt.world_size} process(es) x "
        f"{recipe.grad_accum}), lr {lr:.3g}, {device}{', ' + rt.precision if rt.amp else ''}"
        f"{f', from epoch {progress.epoch + 1} update {progress.updates_done}' if checkpoint else ''} -> {run_dir}"
    )
    if recipe.warmup_epochs >= recipe.epochs - 1 and recipe.epochs > 1 and recipe.preset != "digits":
        records.print(
            f"warning: {recipe.warmup_epochs} warm-up epochs of {recipe.epochs} leave the cosine almost no room; "
            "set --warmup-epochs lower (the ImageNet preset warms up for 20 of 300)"
        )
    if progress.epoch >= recipe.epochs:
        records.print(f"{run_dir} already finished its {recipe.epochs} epochs; pass --epochs N to train longer")

    bar = None

    def on_update(p: Progress, loss: float, terms: dict[str, float]) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(
                total=updates_per_epoch,
                initial=p.updates_done - 1,
                desc=f"epoch {p.epoch + 1}/{recipe.epochs}",
                unit="update",
                leave=False,
                dynamic_ncols=True,
                disable=True if not main else None,  # None: only on a terminal
            )
        splits.check_bad_images()
        lr_now = max(g["lr"] for g in optimizer.param_groups)  # layer decay scales the others down
        records.step(p.global_step, loss, lr_now)
        bar.update(1)
        bar.set_postfix_str(f"loss {loss:.4f} lr {lr_now:.2e} {p.stats.images_per_s:,.0f} img/s")
        if recipe.save_every_steps and p.global_step % recipe.save_every_steps == 0:
            if p.updates_done < updates_per_epoch:
                snapshot = state(p)
                if main:
                    save_checkpoint(run_dir / "last.pt", snapshot)

    last: dict[str, float] = {}

    def on_epoch_end(p: Progress) -> None:
        nonlocal bar, last
        if bar is not None:
            bar.close()
            bar = None
        metrics = evaluate(model, val_loader, device, rt.amp, recipe.channels_last)
        row = dict(
            epoch=p.epoch,
            train_loss=p.stats.loss,
            val_loss=metrics["loss"],
            top1=metrics["top1"],
            top5=metrics["top5"],
            lr=max(g["lr"] for g in optimizer.param_groups),
            images_per_s=p.stats.images_per_s,
            epoch_s=p.stats.seconds,
        )
        if ema is not None:
            row["ema_top1"] = evaluate(ema.module, val_loader, device, rt.amp, recipe.channels_last)["top1"]
        improved = metrics["top1"] > best["top1"]
        if improved:
            best.update(top1=metrics["top1"], epoch=p.epoch)
        ema_text = f"  ema top-1 {row['ema_top1']:5.1f}%" if "ema_top1" in row else ""
        text = f"val loss {row['val_loss']:.4f}  top-1 {row['top1']:5.1f}%  top-5 {row['top5']:5.1f}%{ema_text}"
        records.epoch(row, recipe.epochs, p.global_step, text)
        snapshot = state(Progress(p.epoch, 0, p.global_step))
        if main:
            meta = dict(weights_meta, epoch=p.epoch, top1=f"{metrics['top1']:.3f}")
            export_weights(run_dir / "last.safetensors", snapshot["model"], meta)
            if improved:
                export_weights(run_dir / "best.safetensors", snapshot["model"], meta)
            if ema is not None:
                export_weights(run_dir / "ema.safetensors", snapshot["model_ema"], dict(meta, ema="true"))
            save_checkpoint(run_dir / "last.pt", snapshot)
        last = row

    try:
        fit(
            parts,
            loader,
            total_updates=recipe.epochs * updates_per_epoch,
            updates_per_epoch=updates_per_epoch,
            seed=recipe.seed,
            rank=rt.rank,
            progress=progress,
            on_update=on_update,
            on_epoch_end=on_epoch_end,
        )
    except TrainingDiverged as e:
        epoch, update = divmod(e.global_step - 1, updates_per_epoch)
        kept = (
            f"the last good checkpoint {run_dir / 'last.pt'} is kept"
            if (run_dir / "last.pt").exists()
            else "no checkpoint had been written yet"
        )
        raise UserError(
            f"the loss became {e.value} at epoch {epoch + 1}, update {update + 1}: training stopped and {kept}; "
            f"lower --lr/--base-lr, set --clip-grad 1.0 or use --amp bf16, then --resume {run_dir}"
        ) from None
    finally:
        if bar is not None:
            bar.close()

    records.close()
    if main and recipe.plot:
        from mambaout.train.plot import plot_run

        plot_run(run_dir)
    return RunResult(run_dir, recipe.epochs, best["top1"], best["epoch"], last, time.perf_counter() - started)


def _plural(n: int, word: str) -> str:
    """'1 class', '2 classes', '1 epoch', '12 epochs'."""
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}es" if word.endswith(("s", "x")) else f"{n} {word}s"
