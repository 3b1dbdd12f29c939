"""One epoch of training and one pass of evaluation: the loop bodies, with no printing or file writing.

An optimizer update is `grad_accum` micro-batches; their losses are divided by `grad_accum` and their gradients
summed, and under DDP the gradient all-reduce runs only on the last micro-batch (`no_sync` on the others), so
k micro-batches of b images give the update of one batch of k·b images. The learning rate is set per update
(timm's scheduler `step_update`), so warm-up and cosine decay are smooth even when an epoch has few updates.
A non-finite loss stops the run before the optimizer applies it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mambaout.errors import UserError
from mambaout.train.distributed import all_reduce_sum


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the caller adds where the last good checkpoint is."""


@dataclass
class TrainParts:
    """Everything one training step touches."""

    model: nn.Module  # the bare model: checkpoints and EMA read it
    forward: nn.Module  # what the step calls: the model, its DDP wrapper, or a compiled version of either
    optimizer: torch.optim.Optimizer
    scheduler: object  # a timm scheduler (step_update per optimizer update)
    loss_fn: nn.Module
    device: torch.device
    grad_accum: int = 1
    mixup: Callable | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: nn.Module | None = None  # timm ModelEmaV3
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    clip_grad: float | None = None
    world_size: int = 1

    @property
    def ddp(self) -> DistributedDataParallel | None:
        inner = getattr(self.forward, "_orig_mod", self.forward)  # torch.compile wraps the DDP module
        return inner if isinstance(inner, DistributedDataParallel) else None

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


@dataclass
class EpochStats:
    """Running totals of one epoch (kept in step checkpoints so a mid-epoch resume reports the whole epoch)."""

    loss_sum: float = 0.0
    updates: int = 0
    images: int = 0  # over all processes
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.updates, 1)

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def train_one_epoch(
    parts: TrainParts,
    loader: DataLoader,
    epoch: int,
    updates_per_epoch: int,
    updates_done: int = 0,
    global_step: int = 0,
    stats: EpochStats | None = None,
    on_update: Callable[[int, int, float, EpochStats], None] | None = None,
) -> tuple[int, EpochStats]:
    """Run updates `updates_done`..`updates_per_epoch - 1` of `epoch`; return (global step, epoch totals).

    `loader` must already skip the micro-batches of the updates done (`EpochSampler.skip`). `on_update(update,
    global_step, loss, stats)` runs after every optimizer update (progress, step checkpoints, bad-image limit).

    Example:
        >>> step, stats = train_one_epoch(parts, loader, epoch=0, updates_per_epoch=len(loader))  # doctest: +SKIP
    """
    stats = stats or EpochStats()
    parts.forward.train()
    ddp, accum = parts.ddp, parts.grad_accum
    batches = iter(loader)
    for update in range(updates_done, updates_per_epoch):
        start = time.perf_counter()
        group_loss = torch.zeros((), device=parts.device)
        images_in_update = 0
        for micro in range(accum):
            images, targets = next(batches)
            images, targets = parts.prepare(images), targets.to(parts.device, non_blocking=True)
            if parts.mixup is not None:
                images, targets = parts.mixup(images, targets)
            sync = ddp is None or micro == accum - 1  # all-reduce gradients once per update
            with nullcontext() if sync else ddp.no_sync():
                with parts.autocast():
                    loss = parts.loss_fn(parts.forward(images), targets)
                group_loss += loss.detach().float()
                scaled = loss / accum
                (parts.scaler.scale(scaled) if parts.scaler is not None else scaled).backward()
            images_in_update += images.shape[0]

        # The mean loss of this update over all processes; every process sees the same value and stops together.
        loss_value = all_reduce_sum(group_loss / accum).item() / parts.world_size
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"the loss became {loss_value} at epoch {epoch + 1}, update {update + 1}")
        if parts.clip_grad is not None:
            if parts.scaler is not None:
                parts.scaler.unscale_(parts.optimizer)
            torch.nn.utils.clip_grad_norm_(parts.model.parameters(), parts.clip_grad)
        if parts.scaler is not None:
            parts.scaler.step(parts.optimizer)
            parts.scaler.update()
        else:
            parts.optimizer.step()
        parts.optimizer.zero_grad(set_to_none=True)
        global_step += 1
        parts.scheduler.step_update(num_updates=global_step)
        if parts.ema is not None:
            parts.ema.update(parts.model, step=global_step)

        stats.loss_sum += loss_value
        stats.updates += 1
        stats.images += images_in_update * parts.world_size
        stats.seconds += time.perf_counter() - start
        if on_update is not None:
            on_update(update + 1, global_step, loss_value, stats)
    return global_step, stats


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Cross-entropy loss and top-1/top-5 accuracy (%) over the loader, summed over all processes.

    Example:
        >>> evaluate(model, val_loader, torch.device("cpu"))  # doctest: +SKIP
        {'loss': 0.21, 'top1': 96.4, 'top5': 99.9, 'images': 360}
    """
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits, images
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(images)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == targets[:, None]
        totals += torch.stack(
            [
                nn.functional.cross_entropy(logits, targets, reduction="sum").double(),
                hits[:, :1].sum().double(),
                hits.sum().double(),
                torch.tensor(float(targets.shape[0]), dtype=torch.float64, device=device),
            ]
        )
    loss, top1, top5, n = all_reduce_sum(totals).tolist()
    n = max(n, 1.0)
    return dict(loss=loss / n, top1=100.0 * top1 / n, top5=100.0 * top5 / n, images=int(n))
