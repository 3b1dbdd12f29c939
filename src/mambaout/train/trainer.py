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
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from tqdm import tqdm

from mambaout.data import batch_mixup, build_splits, eval_loader, eval_transform, train_loader, train_transform
from mambaout.errors import UserError
from mambaout.models.factory import create_model
from mambaout.models.variants import pretrained_cfg
from mambaout.train.checkpoint import export_weights, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from mambaout.train.distributed import Processes, broadcast_object, close_processes, gather_objects, init_processes
from mambaout.train.loop import EpochStats, TrainingDiverged, TrainParts, evaluate, train_one_epoch
from mambaout.train.recipe import Recipe
from mambaout.train.records import RunRecords


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


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """'auto' -> bf16 on a CUDA device that supports it, else full precision."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp == "fp16" and device.type != "cuda":
        raise UserError("--amp fp16 needs a CUDA device; on CPU use --amp bf16 or --amp none")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]


AMP_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=recipe.epochs,
        warmup_epochs=recipe.warmup_epochs,
        warmup_lr=recipe.warmup_lr,
        min_lr=recipe.min_lr,
        step_on_epochs=False,  # per update: smooth warm-up even when an epoch is a handful of updates
        updates_per_epoch=updates_per_epoch,
    )
    mixup = batch_mixup(num_classes, recipe.mixup, recipe.cutmix, recipe.mixup_switch_prob, recipe.smoothing)
    if mixup is not None:
        loss_fn: nn.Module = SoftTargetCrossEntropy()  # Mixup makes smoothed soft targets itself
    elif recipe.smoothing > 0:
        loss_fn = LabelSmoothingCrossEntropy(recipe.smoothing)
    else:
        loss_fn = nn.CrossEntropyLoss()
    return optimizer, scheduler, mixup, loss_fn


def train(recipe: Recipe, resume: str | os.PathLike | None = None) -> RunResult:
    """Train as the recipe says (one process, or every process of a torchrun launch); `resume` is a run folder.

    Example:
        >>> from mambaout.train import resolve_recipe, train
        >>> result = train(resolve_recipe({"epochs": 2}))  # the built-in digits  # doctest: +SKIP
        >>> result.best_top1, result.run_dir  # doctest: +SKIP
    """
    threads = torch.get_num_threads()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    procs = init_processes(recipe.device)
    try:
        return _train(recipe, procs, Path(resume) if resume else None)
    finally:
        close_processes()
        torch.set_num_threads(threads)


def _train(recipe: Recipe, procs: Processes, resume: Path | None) -> RunResult:
    started = time.perf_counter()
    device, main = procs.device, procs.is_main
    amp_dtype = resolve_amp(recipe.amp, device)
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
    num_classes = recipe.num_classes or len(splits.classes)
    if num_classes < len(splits.classes):
        raise UserError(f"num_classes {num_classes} is below the {len(splits.classes)} classes found in the data")
    if checkpoint is not None and checkpoint["classes"] != splits.classes:
        raise UserError(
            f"the classes of {splits.name} differ from those {run_dir} was trained on; resume on the same data"
        )
    pin = device.type == "cuda"
    loader = train_loader(
        splits.train, recipe.batch_size, procs.rank, procs.world_size, recipe.seed, recipe.workers, pin
    )
    val_loader = eval_loader(splits.val, recipe.batch_size, procs.rank, procs.world_size, recipe.workers, pin)
    updates_per_epoch = len(loader) // recipe.grad_accum
    if updates_per_epoch == 0:
        raise UserError(
            f"the {len(splits.train)} training images do not fill one global batch of "
            f"{recipe.global_batch(procs.world_size)}; lower --batch-size or --grad-accum"
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
    lr = recipe.resolved_lr(procs.world_size)
    optimizer, scheduler, mixup, loss_fn = build_optimization(recipe, model, num_classes, updates_per_epoch, lr)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema = ModelEmaV3(model, decay=recipe.model_ema_decay) if recipe.model_ema else None

    forward: nn.Module = model
    if procs.distributed:
        ids = [device.index] if device.type == "cuda" else None
        forward = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if recipe.compile:
        forward = torch.compile(forward)

    # Where to start: a fresh run, or the state of the checkpoint.
    start_epoch, updates_done, global_step, best_top1, best_epoch = 0, 0, 0, -1.0, 0
    stats = EpochStats()
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        # The cosine lr is a function of the update count alone, so the schedule is rebuilt from the recipe rather
        # than loaded: `--resume RUN --epochs 400` then stretches it instead of keeping the old end point.
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        if ema is not None and checkpoint.get("model_ema"):
            ema.module.load_state_dict(checkpoint["model_ema"])
        start_epoch, updates_done = checkpoint["epoch"], checkpoint["updates_done"]
        global_step, best_top1 = checkpoint["global_step"], checkpoint["best_top1"]
        best_epoch = checkpoint["best_epoch"]
        stats = EpochStats(**checkpoint["epoch_stats"])
        scheduler.step_update(num_updates=global_step)

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    records = RunRecords(run_dir, main, recipe.tensorboard, start_epoch, global_step, ema=ema is not None)
    if main:
        (run_dir / "config.yaml").write_text(
            recipe.to_yaml(procs.world_size, device=str(device), amp=AMP_NAMES.get(amp_dtype, "none"))
        )
        (run_dir / "classes.txt").write_text("\n".join(splits.classes) + "\n")
    parts = TrainParts(
        model=model,
        forward=forward,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=loss_fn,
        device=device,
        grad_accum=recipe.grad_accum,
        mixup=mixup,
        scaler=scaler,
        ema=ema,
        amp_dtype=amp_dtype,
        channels_last=recipe.channels_last,
        clip_grad=recipe.clip_grad,
        world_size=procs.world_size,
    )

    def state(epoch: int, done: int, step: int, epoch_stats: EpochStats) -> dict[str, Any]:
        rngs = gather_objects(rng_state())  # every process's generators, for an exact mid-epoch restart
        return dict(
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else None,
            model_ema=ema.module.state_dict() if ema is not None else None,
            epoch=epoch,
            updates_done=done,
            global_step=step,
            best_top1=best_top1,
            best_epoch=best_epoch,
            epoch_stats=vars(epoch_stats).copy(),
            rng=rngs,
            world_size=procs.world_size,
            config=recipe.to_dict(),
            classes=splits.classes,
        )

    weights_meta = dict(model=recipe.model, num_classes=num_classes, input_size=recipe.input_size)
    params = sum(p.numel() for p in model.parameters())
    records.print(
        f"{'resuming' if checkpoint else 'training'} {recipe.model} ({params / 1e6:.2f}M params) on {splits.name}: "
        f"{len(splits.train)} train / {len(splits.val)} val images, {len(splits.classes)} classes, "
        f"{recipe.epochs} epochs of {updates_per_epoch} updates, global batch {recipe.global_batch(procs.world_size)} "
        f"({recipe.batch_size} x {procs.world_size} process(es) x {recipe.grad_accum}), lr {lr:.3g}, {device}"
        f"{', ' + AMP_NAMES[amp_dtype] if amp_dtype else ''}"
        f"{f', from epoch {start_epoch + 1} update {updates_done}' if checkpoint else ''} -> {run_dir}"
    )

    last: dict[str, float] = {}
    if start_epoch >= recipe.epochs:
        records.print(f"{run_dir} already finished its {recipe.epochs} epochs; pass --epochs N to train longer")
    for epoch in range(start_epoch, recipe.epochs):
        splits.train.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        loader.sampler.skip = updates_done * recipe.grad_accum * recipe.batch_size
        if updates_done and checkpoint is not None and len(checkpoint["rng"]) == procs.world_size:
            set_rng_state(checkpoint["rng"][procs.rank])
        else:
            seed_all(recipe.seed * 1_000_003 + epoch * 1_009 + procs.rank)
        bar = tqdm(
            total=updates_per_epoch,
            initial=updates_done,
            desc=f"epoch {epoch + 1}/{recipe.epochs}",
            unit="update",
            leave=False,
            dynamic_ncols=True,
            disable=True if not main else None,  # None: only on a terminal
        )

        def on_update(done: int, step: int, loss: float, epoch_stats: EpochStats, epoch: int = epoch, bar=bar) -> None:
            splits.check_bad_images()
            lr_now = max(g["lr"] for g in optimizer.param_groups)  # layer decay scales the others down
            records.step(step, loss, lr_now)
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.4f} lr {lr_now:.2e} {epoch_stats.images_per_s:,.0f} img/s")
            if recipe.save_every_steps and step % recipe.save_every_steps == 0 and done < updates_per_epoch:
                snapshot = state(epoch, done, step, epoch_stats)
                if main:
                    save_checkpoint(run_dir / "last.pt", snapshot)

        try:
            global_step, stats = train_one_epoch(
                parts, loader, epoch, updates_per_epoch, updates_done, global_step, stats, on_update
            )
        except TrainingDiverged as e:
            kept = (
                f"the last good checkpoint {run_dir / 'last.pt'} is kept"
                if (run_dir / "last.pt").exists()
                else "no checkpoint had been written yet"
            )
            raise UserError(
                f"{e}: training stopped and {kept}; lower --lr/--base-lr, set --clip-grad 1.0 or use --amp bf16, "
                f"then --resume {run_dir}"
            ) from None
        finally:
            bar.close()

        metrics = evaluate(model, val_loader, device, amp_dtype, recipe.channels_last)
        row = dict(
            epoch=epoch + 1,
            train_loss=stats.loss,
            val_loss=metrics["loss"],
            top1=metrics["top1"],
            top5=metrics["top5"],
            lr=max(g["lr"] for g in optimizer.param_groups),
            images_per_s=stats.images_per_s,
            epoch_s=stats.seconds,
        )
        if ema is not None:
            row["ema_top1"] = evaluate(ema.module, val_loader, device, amp_dtype, recipe.channels_last)["top1"]
        improved = metrics["top1"] > best_top1
        if improved:
            best_top1, best_epoch = metrics["top1"], epoch + 1
        records.epoch(row, recipe.epochs, global_step)
        snapshot = state(epoch + 1, 0, global_step, EpochStats())
        if main:
            meta = dict(weights_meta, epoch=epoch + 1, top1=f"{metrics['top1']:.3f}")
            export_weights(run_dir / "last.safetensors", snapshot["model"], meta)
            if improved:
                export_weights(run_dir / "best.safetensors", snapshot["model"], meta)
            if ema is not None:
                export_weights(run_dir / "ema.safetensors", snapshot["model_ema"], dict(meta, ema="true"))
            save_checkpoint(run_dir / "last.pt", snapshot)
        last, updates_done, stats = row, 0, EpochStats()

    records.close()
    if main and recipe.plot:
        from mambaout.train.plot import plot_run

        plot_run(run_dir)
    return RunResult(run_dir, recipe.epochs, best_top1, best_epoch, last, time.perf_counter() - started)
