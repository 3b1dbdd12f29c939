"""A dense-task run on the engine's driver: what detection and segmentation share around their model, loss and metric.

Both are a `DenseConfig` (the fields below, stated once, from which `mambaout detect train` / `segment train` are
generated) plus a `DenseTask` subclass (`detect.Detection`, `segment.Segmentation`): the data, the model, the loss,
the learning-rate decay and the evaluation. The task's common part here is the paper's optimisation (AdamW, no weight
decay on norms and biases, mmcv's linear warm-up before the recipe's decay) and the checkpoint a reader needs
(`task`, `model_args`, `config`); `mambaout.engine.run` does the rest: processes, precision, DDP, seeded data order,
checkpoints that resume exactly (also mid-epoch), the run folder (config.yaml, log.jsonl, metrics.json, last.pt, and
config.json, the resolved settings as JSON).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mambaout.dense.configs import DenseConfig
from mambaout.engine.checkpoint import load_checkpoint
from mambaout.engine.records import write_json
from mambaout.engine.run import OptimizerSpec, RunConfig, RunState, ScheduleSpec, Task, run
from mambaout.engine.runtime import Runtime, setup_runtime
from mambaout.errors import UserError


class DenseTask(Task):
    """What a dense pipeline brings to `train_dense`: subclasses set `name`, `title`, `unit` and define `model`, `loss`,
    `evaluate` and `decay`."""

    name: str  # "detect" or "segment": checkpoints name it, and refuse the other's
    title: str  # for the first log line
    unit: str  # what cfg.eval_every counts: "epoch" or "update"
    advice = "lower --lr or train with --amp none, then --resume"

    def __init__(self, cfg: DenseConfig, rt: Runtime, train_set: Dataset, val_set: Dataset | None, model_args: dict):
        self.cfg, self.rt, self.train_set, self.val_set, self.model_args = cfg, rt, train_set, val_set, model_args
        self.optimizer = OptimizerSpec("adamw", cfg.lr, cfg.weight_decay)
        self.schedule = ScheduleSpec(cfg.warmup_iters, decay=self.decay, warmup_ratio=cfg.warmup_ratio)

    def decay(self, optimizer: torch.optim.Optimizer, updates_per_epoch: int) -> Any:
        """The torch scheduler after the warm-up."""
        raise NotImplementedError

    def train_data(self) -> Dataset:
        return self.train_set

    def extra(self) -> dict[str, Any]:
        """What the task adds to config.json and every checkpoint."""
        return {}

    def config(self, runtime: Runtime) -> dict[str, Any]:
        return asdict(self.cfg) | self.extra()

    def checkpoint_extra(self) -> dict[str, Any]:
        return dict(task=self.name, model_args=self.model_args, config=asdict(self.cfg), **self.extra())

    def restore(self, checkpoint: dict[str, Any]) -> None:
        check_dense_checkpoint(checkpoint, Path(self.cfg.output) / "last.pt", self.name)

    def on_start(self, run: RunState) -> None:
        rt, cfg = self.rt, self.cfg
        if rt.is_main:
            extra = dict(world_size=rt.world_size, precision=rt.precision, updates=run.total_updates)
            write_json(self.config(rt) | extra, Path(cfg.output) / "config.json")
        if run.resumed:
            rt.log(f"resumed from {Path(cfg.output) / 'last.pt'} at iteration {run.progress.global_step}")
        rt.log(
            f"{self.title} {cfg.backbone}: {len(self.train_set)} training images, {run.updates_per_epoch} "
            f"iterations/epoch, {run.total_updates} iterations, {rt.world_size} "
            f"process{'es' if rt.world_size > 1 else ''}, {rt.precision} on {rt.device}"
        )
        if not cfg.backbone_weights:
            rt.log(
                "no --backbone-weights: the backbone starts from random weights (the paper starts from ImageNet ones)"
            )


def check_dense_checkpoint(ckpt: Any, path: str | os.PathLike, task: str) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("task") != task:
        found = ckpt.get("task") if isinstance(ckpt, dict) else None
        what = f"a '{found}' checkpoint" if found else "not a checkpoint of `mambaout detect/segment train`"
        raise UserError(f"{path} is {what}; `mambaout {task}` needs one written by `mambaout {task} train`")


def load_dense_checkpoint(path: str | os.PathLike, task: str) -> dict[str, Any]:
    """Read a checkpoint written by a dense run of `task` ('detect' or 'segment'); user mistakes are UserErrors."""
    ckpt = load_checkpoint(path)
    check_dense_checkpoint(ckpt, path, task)
    return ckpt


def load_dense_model(
    checkpoint: str | os.PathLike, task: str, build: Callable[..., torch.nn.Module], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a `mambaout <task> train` checkpoint holds; returns (model in eval mode, checkpoint)."""
    ckpt = load_dense_checkpoint(checkpoint, task)
    model = build(**ckpt["model_args"], drop_path_rate=0.0)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def train_dense(cfg: DenseConfig, task: DenseTask, epochs: int | None = None, updates: int | None = None) -> dict:
    """Train `task` as `cfg` says for `epochs` and/or `updates`; returns {"losses": [per-update loss], "metrics": last
    metrics, "checkpoint"}.

    Writes config.yaml, config.json, log.jsonl, last.pt (every `checkpoint_every` updates, at each epoch end and at
    the end) and metrics.json into `cfg.output` (main process).
    """
    rt = task.rt
    config = RunConfig(
        updates=updates,
        epochs=epochs,
        batch_size=cfg.batch_size // rt.world_size,
        runtime=rt,
        workers=cfg.workers,
        seed=cfg.seed,
        output=cfg.output,
        resume=cfg.resume,
        checkpoint_every=cfg.checkpoint_every,
        eval_every=cfg.eval_every if task.val_set is not None else -1,
        eval_unit=task.unit,
        log_every=cfg.log_every,
    )
    result = run(task, config)
    checkpoint = str(Path(cfg.output) / "last.pt") if rt.is_main else None
    return dict(losses=result.losses, metrics=result.metrics, checkpoint=checkpoint)


def setup(cfg: DenseConfig) -> Runtime:
    rt = setup_runtime(cfg.device, cfg.amp)
    if cfg.batch_size % rt.world_size:
        raise UserError(f"batch size {cfg.batch_size} does not split over {rt.world_size} processes; use a multiple")
    return rt
