"""Learning-rate schedules, stepped once per optimizer update: timm's cosine, and mmcv's linear warm-up before a
torch scheduler (the dense recipes' multi-step and poly decays)."""

from __future__ import annotations

import torch
from timm.scheduler import create_scheduler_v2
from torch.optim.lr_scheduler import ChainedScheduler, LinearLR, LRScheduler


def cosine_per_update(
    optimizer: torch.optim.Optimizer,
    updates: int,
    warmup_updates: int,
    warmup_lr: float,
    min_lr: float,
    updates_per_epoch: int = 1,
):
    """timm's cosine with linear warm-up, counted in updates (`step_update(n)`), so warm-up and decay are smooth even
    when an epoch is a handful of updates. `updates`/`warmup_updates` count epochs of `updates_per_epoch` updates."""
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=updates,
        warmup_epochs=warmup_updates,
        warmup_lr=warmup_lr,
        min_lr=min_lr,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    return scheduler


def with_warmup(optimizer: torch.optim.Optimizer, main: LRScheduler, warmup_iters: int, ratio: float) -> LRScheduler:
    """`main` preceded by a linear warm-up from `ratio` x lr over `warmup_iters` steps (mmcv's 'linear' warm-up)."""
    if warmup_iters <= 0:
        return ChainedScheduler([main])
    return ChainedScheduler([LinearLR(optimizer, ratio, 1.0, total_iters=warmup_iters), main])
