"""A dense-task run on the engine: what detection and segmentation share around their model, loss and metric.

Both are a `DenseConfig` (the fields below, stated once, from which `mambaout detect train` / `segment train` are
generated) plus a `DenseTask`: the data, the model, the loss, the learning-rate decay and the evaluation. This file
does the rest with `mambaout.engine`: processes, precision, DDP, AdamW (no weight decay on norms and biases), the
linear warm-up, seeded data order, checkpoints that resume exactly (also mid-epoch), `log.jsonl`, `config.json`,
`metrics.json`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from torch.utils.data import Dataset

from mambaout.dense.configs import DenseConfig
from mambaout.engine.checkpoint import load_checkpoint, save_checkpoint
from mambaout.engine.fit import Progress, fit, restore_training_state, training_state
from mambaout.engine.loop import TrainingDiverged, TrainParts
from mambaout.engine.records import RunLog, write_json
from mambaout.engine.runtime import Runtime, seed_all, setup_runtime
from mambaout.engine.schedule import with_warmup
from mambaout.errors import UserError


@dataclass
class DenseTask:
    """What a dense pipeline brings to `train_dense`."""

    name: str  # "detect" or "segment": checkpoints name it, and refuse the other's
    title: str  # for the first log line
    train_set: Dataset
    val_set: Dataset | None
    model: torch.nn.Module
    model_args: dict[str, Any]
    loss: Callable[[torch.nn.Module, Any], dict[str, torch.Tensor]]
    decay: Callable[[torch.optim.Optimizer, int], Any]  # (optimizer, updates per epoch) -> torch scheduler
    total_updates: Callable[[int], int]  # updates per epoch -> updates in the run
    evaluate: Callable[[torch.nn.Module, Runtime], dict[str, Any]]
    unit: str  # what cfg.eval_every counts: "epoch" or "update"
    checkpoint_extra: dict[str, Any]
    collate_fn: Callable | None = None
    drop_log_keys: tuple[str, ...] = ()


def load_dense_checkpoint(path: str | os.PathLike, task: str) -> dict[str, Any]:
    """Read a checkpoint written by a dense run of `task` ('detect' or 'segment'); user mistakes are UserErrors."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("task") != task:
        found = ckpt.get("task") if isinstance(ckpt, dict) else None
        what = f"a '{found}' checkpoint" if found else "not a checkpoint of `mambaout detect/segment train`"
        raise UserError(f"{path} is {what}; `mambaout {task}` needs one written by `mambaout {task} train`")
    return ckpt


def load_dense_model(
    checkpoint: str | os.PathLike, task: str, build: Callable[..., torch.nn.Module], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a `mambaout <task> train` checkpoint holds; returns (model in eval mode, checkpoint)."""
    ckpt = load_dense_checkpoint(checkpoint, task)
    model = build(**ckpt["model_args"], drop_path_rate=0.0)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def check_batch(cfg: DenseConfig, rt: Runtime) -> None:
    if cfg.batch_size % rt.world_size:
        raise UserError(f"batch size {cfg.batch_size} does not split over {rt.world_size} processes; use a multiple")


def train_dense(cfg: DenseConfig, rt: Runtime, task: DenseTask) -> dict[str, Any]:
    """Train `task.model` as `cfg` says; returns {"losses": [per-update loss], "metrics": last metrics, "checkpoint"}.

    Writes config.json, log.jsonl, last.pt (every `checkpoint_every` updates, at each epoch end and at the end) and
    metrics.json into `cfg.output` (main process).
    """
    model = task.model.to(rt.device)
    per_process = cfg.batch_size // rt.world_size
    loader = rt.train_loader(task.train_set, per_process, cfg.seed, cfg.workers, collate_fn=task.collate_fn)
    updates_per_epoch = len(loader)
    if updates_per_epoch == 0:
        raise UserError(
            f"the {len(task.train_set)} training images do not fill one batch of {cfg.batch_size}; lower --batch-size"
        )
    total = task.total_updates(updates_per_epoch)
    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = with_warmup(optimizer, task.decay(optimizer, updates_per_epoch), cfg.warmup_iters, cfg.warmup_ratio)
    parts = TrainParts(
        model=model,
        forward=rt.wrap(model),
        optimizer=optimizer,
        loss=task.loss,
        schedule=lambda step: scheduler.step(),
        scaler=rt.grad_scaler(),
        amp_dtype=rt.amp,
        device=rt.device,
        world_size=rt.world_size,
    )

    output = Path(cfg.output)
    progress = Progress()
    if cfg.resume and (output / "last.pt").is_file():
        progress = restore_training_state(parts, scheduler, load_dense_checkpoint(output / "last.pt", task.name))
        rt.log(f"resumed from {output / 'last.pt'} at iteration {progress.global_step}")
    elif (output / "last.pt").is_file():
        raise UserError(f"{output} already holds a run; continue it with --resume or choose another --output")
    if rt.is_main:
        extra = dict(world_size=rt.world_size, precision=rt.precision, updates=total)
        write_json(asdict(cfg) | task.checkpoint_extra | extra, output / "config.json")
    log = RunLog(output, rt.is_main, progress.global_step)
    rt.log(
        f"{task.title} {cfg.backbone}: {len(task.train_set)} training images, {updates_per_epoch} iterations/epoch, "
        f"{total} iterations, {rt.world_size} process{'es' if rt.world_size > 1 else ''}, {rt.precision} on "
        f"{rt.device}"
    )
    if not cfg.backbone_weights:
        rt.log("no --backbone-weights: the backbone starts from random weights (the paper starts from ImageNet ones)")

    losses: list[float] = []
    metrics: dict[str, Any] = {}

    def save(p: Progress) -> None:
        state = training_state(
            parts, scheduler, p, task=task.name, model_args=task.model_args, config=asdict(cfg), **task.checkpoint_extra
        )
        if rt.is_main:
            save_checkpoint(output / "last.pt", state)

    def evaluate(p: Progress) -> None:
        nonlocal metrics
        metrics = task.evaluate(model, rt)
        log(step=p.global_step, epoch=p.epoch, **{k: v for k, v in metrics.items() if k not in task.drop_log_keys})
        if rt.is_main:
            write_json(metrics, output / "metrics.json")

    def on_update(p: Progress, loss: float, terms: dict[str, float]) -> None:
        losses.append(loss)
        step, last = p.global_step, p.global_step == total
        if step % cfg.log_every == 0 or step == 1:
            lr = optimizer.param_groups[0]["lr"]
            log(step=step, epoch=p.epoch + 1, lr=lr, loss=round(loss, 4), **{k: round(v, 4) for k, v in terms.items()})
            rt.log(f"epoch {p.epoch + 1} iteration {step}/{total}: loss {loss:.4f} lr {lr:.2e}")
        mid_epoch = p.updates_done < updates_per_epoch
        if mid_epoch and (last or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)):
            save(p)
        if task.val_set is None:
            return
        if every(cfg.eval_every, step, last) if task.unit == "update" else (last and mid_epoch and cfg.eval_every >= 0):
            evaluate(p)

    def on_epoch_end(p: Progress) -> None:
        save(Progress(p.epoch, 0, p.global_step))
        if task.val_set is not None and task.unit == "epoch" and every(cfg.eval_every, p.epoch, p.global_step == total):
            evaluate(p)

    try:
        fit(parts, loader, total, updates_per_epoch, cfg.seed, rt.rank, progress, on_update, on_epoch_end)
    except TrainingDiverged as e:
        raise UserError(
            f"the loss became {e.value} at iteration {e.global_step}; lower --lr or train with --amp none, "
            "then --resume"
        ) from None
    return dict(losses=losses, metrics=metrics, checkpoint=str(output / "last.pt") if rt.is_main else None)


def every(interval: int, count: int, last: bool) -> bool:
    """An interval schedule: `interval` > 0 every that many, 0 only at the last, -1 never."""
    if interval < 0:
        return False
    return last or (interval > 0 and count % interval == 0)


def setup(cfg: DenseConfig) -> Runtime:
    rt = setup_runtime(cfg.device, cfg.amp)
    check_batch(cfg, rt)
    seed_all(cfg.seed)  # the same initial weights in every process
    return rt
