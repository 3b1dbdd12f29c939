"""Epochs of updates that resume exactly: the driver every pipeline with a dataset runs (classification, detection,
segmentation, line video).

Determinism: data order is a function of (seed, epoch) (`EpochSampler`), augmentation of (seed, epoch, index) where
the dataset seeds per sample, and the main-process generators (drop path, Mixup, random crops drawn in the main
process) are reseeded from (seed, epoch, rank) at each epoch start. A checkpoint written after any update holds the
model, optimizer, schedule, grad scaler, EMA, the position (epoch, updates done in it, global step), the running
epoch totals and every process's generator states, so a resumed run repeats the uninterrupted one, also mid-epoch.

Example:
    >>> progress = fit(parts, loader, total_updates=1000, updates_per_epoch=len(loader), seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import DataLoader

from mambaout.engine.checkpoint import rng_state, set_rng_state
from mambaout.engine.distributed import gather_objects
from mambaout.engine.loop import EpochStats, TrainParts, train_updates
from mambaout.engine.runtime import epoch_seed, seed_all


@dataclass
class Progress:
    """Where a run is: `epoch` epochs finished, `updates_done` updates into the next one, `global_step` in all."""

    epoch: int = 0
    updates_done: int = 0
    global_step: int = 0
    stats: EpochStats = field(default_factory=EpochStats)
    rng: list[dict[str, Any]] | None = None  # every process's generators at a mid-epoch checkpoint


def training_state(parts: TrainParts, scheduler: Any, progress: Progress, **extra: Any) -> dict[str, Any]:
    """Everything a resume needs, as a checkpoint dict (call it on every process: it gathers the generators)."""
    rngs = gather_objects(rng_state())
    return dict(
        model=parts.model.state_dict(),
        optimizer=parts.optimizer.state_dict(),
        scheduler=scheduler.state_dict() if scheduler is not None else None,
        scaler=parts.scaler.state_dict() if parts.scaler is not None else None,
        model_ema=parts.ema.module.state_dict() if parts.ema is not None else None,
        epoch=progress.epoch,
        updates_done=progress.updates_done,
        global_step=progress.global_step,
        epoch_stats=vars(progress.stats).copy(),
        rng=rngs,
        world_size=len(rngs),
        **extra,
    )


def restore_training_state(parts: TrainParts, scheduler: Any, checkpoint: dict[str, Any]) -> Progress:
    """Load a `training_state` checkpoint into `parts`; returns where to continue.

    A timm scheduler (per-update `step_update`) is a function of the update count alone, so it is rebuilt from the
    recipe and moved to the checkpoint's step rather than loaded: `--epochs 400` on resume then stretches the cosine
    instead of keeping the old end point. A torch scheduler is loaded.
    """
    parts.model.load_state_dict(checkpoint["model"])
    parts.optimizer.load_state_dict(checkpoint["optimizer"])
    if parts.scaler is not None and checkpoint.get("scaler"):
        parts.scaler.load_state_dict(checkpoint["scaler"])
    if parts.ema is not None and checkpoint.get("model_ema"):
        parts.ema.module.load_state_dict(checkpoint["model_ema"])
    step = checkpoint["global_step"]
    if hasattr(scheduler, "step_update"):
        scheduler.step_update(num_updates=step)
    elif scheduler is not None and checkpoint.get("scheduler"):
        scheduler.load_state_dict(checkpoint["scheduler"])
    stats = EpochStats(**checkpoint["epoch_stats"])
    return Progress(checkpoint["epoch"], checkpoint["updates_done"], step, stats, checkpoint["rng"])


def fit(
    parts: TrainParts,
    loader: DataLoader,
    total_updates: int,
    updates_per_epoch: int,
    seed: int,
    rank: int = 0,
    progress: Progress | None = None,
    on_update: Callable[[Progress, float, dict[str, float]], None] | None = None,
    on_epoch_end: Callable[[Progress], None] | None = None,
) -> Progress:
    """Train from `progress` (default: the start) to `total_updates`, epoch by epoch.

    `loader` must be an engine loader (`Runtime.train_loader`: an `EpochSampler` with `skip`), with
    `updates_per_epoch` x grad_accum batches an epoch. `on_update(progress, loss, terms)` runs after every update,
    with `progress` already advanced (step checkpoints, logs); `on_epoch_end(progress)` after every full epoch, with
    `progress.epoch` counting it and `progress.stats` still holding its totals (evaluation, epoch checkpoints).
    """
    progress = progress or Progress()
    accum = parts.grad_accum
    for epoch in range(progress.epoch, math.ceil(total_updates / updates_per_epoch)):
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        loader.sampler.skip = progress.updates_done * accum * loader.batch_size
        if progress.updates_done and progress.rng is not None and len(progress.rng) > rank:
            set_rng_state(progress.rng[rank])
        else:
            seed_all(epoch_seed(seed, epoch, rank))
        progress.rng = None
        end = min(updates_per_epoch, total_updates - epoch * updates_per_epoch)

        def after_update(step: int, loss: float, terms: dict[str, float], stats: EpochStats) -> None:
            progress.global_step, progress.stats = step, stats
            progress.updates_done += 1
            if on_update is not None:
                on_update(progress, loss, terms)

        progress.global_step, progress.stats = train_updates(
            parts, iter(loader), end - progress.updates_done, progress.global_step, progress.stats, after_update
        )
        if end == updates_per_epoch:
            progress.epoch, progress.updates_done = epoch + 1, 0
            if on_epoch_end is not None:
                on_epoch_end(progress)
            progress.stats = EpochStats()
    return progress
