"""The one training step of every pipeline, and the loop of updates around it. No printing, no files.

A task hands the engine its model, optimizer, schedule and a `loss(forward, batch)` that returns the loss (or a dict
of loss terms whose sum is minimised); everything else is here, the same for classification, detection,
segmentation, the study and line video:

- An optimizer update is `grad_accum` micro-batches; their losses are divided by `grad_accum` and their gradients
  summed, and under DDP the gradient all-reduce runs only on the last micro-batch (`no_sync` on the others), so
  k micro-batches of b samples give the update of one batch of k·b samples.
- Mixed precision: the task's autocast dtype, fp16 with loss scaling (a disabled `GradScaler` is a pass-through).
- Optional gradient clipping, then the optimizer step, then `schedule(global_step)` (timm's per-update
  `step_update`, or a torch scheduler's `step()`), then the EMA update.
- A non-finite loss stops the run before the optimizer applies it (`TrainingDiverged`); every process sees the same
  mean loss, so all stop together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mambaout.engine.distributed import all_reduce_sum
from mambaout.errors import UserError

Loss = Callable[[nn.Module, Any], "torch.Tensor | dict[str, torch.Tensor]"]


class TrainingDiverged(UserError):
    """The loss became NaN or infinite at update `global_step`; the caller says where the last good checkpoint is and
    what to change."""

    def __init__(self, value: float, global_step: int | None = None):
        self.value, self.global_step = value, global_step
        super().__init__(f"the loss became {value}" + (f" at update {global_step}" if global_step else ""))


def _batch_samples(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(first)


@dataclass
class TrainParts:
    """Everything one training step touches."""

    model: nn.Module  # the bare model: checkpoints and EMA read it
    forward: nn.Module  # what the step calls: the model, its DDP wrapper, or a compiled version of either
    optimizer: torch.optim.Optimizer
    loss: Loss  # loss(forward, batch) -> loss tensor, or {term: tensor} summed into the loss
    schedule: Callable[[int], None] = lambda global_step: None  # called after each update with the update count
    scaler: torch.amp.GradScaler | None = None
    amp_dtype: torch.dtype | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    grad_accum: int = 1
    ema: nn.Module | None = None  # timm ModelEmaV3
    clip_grad: float | None = None
    world_size: int = 1
    samples: Callable[[Any], int] = _batch_samples  # samples in a micro-batch, for throughput

    @property
    def ddp(self) -> DistributedDataParallel | None:
        inner = getattr(self.forward, "_orig_mod", self.forward)  # torch.compile wraps the DDP module
        return inner if isinstance(inner, DistributedDataParallel) else None

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


@dataclass
class EpochStats:
    """Running totals of a stretch of updates (kept in checkpoints so a mid-epoch resume reports the whole epoch)."""

    loss_sum: float = 0.0
    updates: int = 0
    images: int = 0  # samples, over all processes
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.updates, 1)

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def train_step(parts: TrainParts, micro_batches: list[Any]) -> tuple[float, dict[str, float]]:
    """One optimizer update over `micro_batches` (grad_accum of them); returns (mean loss over processes, terms).

    Example:
        >>> loss, terms = train_step(parts, [next(batches)])  # doctest: +SKIP
    """
    ddp, accum = parts.ddp, len(micro_batches)
    group_loss = torch.zeros((), device=parts.device)
    terms_sum: dict[str, torch.Tensor] = {}
    for micro, batch in enumerate(micro_batches):
        sync = ddp is None or micro == accum - 1  # all-reduce gradients once per update
        with nullcontext() if sync else ddp.no_sync():
            with parts.autocast():
                out = parts.loss(parts.forward, batch)
            if isinstance(out, dict):
                loss = sum(out.values())
                for k, v in out.items():
                    terms_sum[k] = terms_sum.get(k, 0.0) + v.detach().float() / accum
            else:
                loss = out
            group_loss += loss.detach().float()
            scaled = loss / accum
            (parts.scaler.scale(scaled) if parts.scaler is not None else scaled).backward()

    loss_value = all_reduce_sum(group_loss / accum).item() / parts.world_size
    if not math.isfinite(loss_value):
        parts.optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(loss_value)
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
    return loss_value, {k: float(v) for k, v in terms_sum.items()}


def train_updates(
    parts: TrainParts,
    batches: Iterator[Any],
    updates: int,
    global_step: int = 0,
    stats: EpochStats | None = None,
    on_update: Callable[[int, float, dict[str, float], EpochStats], None] | None = None,
) -> tuple[int, EpochStats]:
    """Run `updates` optimizer updates on `batches` (grad_accum micro-batches each); return (global step, totals).

    `on_update(global_step, loss, terms, stats)` runs after every update (progress, logs, step checkpoints).

    Example:
        >>> step, stats = train_updates(parts, iter(loader), updates=len(loader))  # doctest: +SKIP
    """
    stats = stats or EpochStats()
    parts.forward.train()
    for _ in range(updates):
        start = time.perf_counter()
        micro_batches = [next(batches) for _ in range(parts.grad_accum)]
        try:
            loss_value, terms = train_step(parts, micro_batches)
        except TrainingDiverged as e:
            raise TrainingDiverged(e.value, global_step + 1) from None
        global_step += 1
        parts.schedule(global_step)
        if parts.ema is not None:
            parts.ema.update(parts.model, step=global_step)
        stats.loss_sum += loss_value
        stats.updates += 1
        stats.images += sum(parts.samples(b) for b in micro_batches) * parts.world_size
        stats.seconds += time.perf_counter() - start
        if on_update is not None:
            on_update(global_step, loss_value, terms, stats)
    return global_step, stats
