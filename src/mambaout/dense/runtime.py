"""What a dense-task run needs around its loop: processes, mixed precision, checkpoints and logs.

Processes, devices and checkpoints are the classification trainer's (`mambaout.train`): one process per GPU under
`torchrun`, a world of one under plain `python`; checkpoints written atomically (temporary file, fsync, rename), so a
run killed mid-write never leaves a torn `last.pt`. `--amp` speaks the same language as `mambaout train`: auto (bf16
on GPUs that have it, else full precision), bf16, fp16 (with loss scaling) or none.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import ChainedScheduler, LinearLR, LRScheduler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from mambaout.errors import UserError
from mambaout.train.checkpoint import load_checkpoint as _load_checkpoint
from mambaout.train.checkpoint import save_checkpoint
from mambaout.train.distributed import Processes, gather_objects, init_processes
from mambaout.train.trainer import AMP_NAMES, resolve_amp

AMP_CHOICES = ("auto", "bf16", "fp16", "none")
__all__ = [
    "Runtime",
    "with_warmup",
    "setup_runtime",
    "gather",
    "save_checkpoint",
    "load_checkpoint",
    "RunLog",
    "write_json",
    "infinite",
]


def with_warmup(optimizer: torch.optim.Optimizer, main: LRScheduler, warmup_iters: int, ratio: float) -> LRScheduler:
    """`main` preceded by a linear warm-up from `ratio` x lr over `warmup_iters` steps (mmcv's 'linear' warm-up)."""
    if warmup_iters <= 0:
        return ChainedScheduler([main])
    return ChainedScheduler([LinearLR(optimizer, ratio, 1.0, total_iters=warmup_iters), main])


@dataclass
class Runtime:
    procs: Processes
    amp: torch.dtype | None = None

    @property
    def device(self) -> torch.device:
        return self.procs.device

    @property
    def rank(self) -> int:
        return self.procs.rank

    @property
    def world_size(self) -> int:
        return self.procs.world_size

    @property
    def distributed(self) -> bool:
        return self.procs.distributed

    @property
    def is_main(self) -> bool:
        return self.procs.is_main

    @property
    def precision(self) -> str:
        return AMP_NAMES.get(self.amp, "fp32")

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16 (a pass-through otherwise)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around `model` in a multi-process run, the model itself otherwise."""
        if not self.distributed:
            return model
        return DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def train_loader(self, dataset: Dataset, global_batch: int, seed: int, workers: int, **kwargs: Any) -> DataLoader:
        """Shuffled loader giving each process its share of the global batch (DistributedSampler under torchrun)."""
        sampler = DistributedSampler(dataset, seed=seed) if self.distributed else RandomSampler(dataset)
        return DataLoader(
            dataset,
            batch_size=global_batch // self.world_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            **kwargs,
        )

    def log(self, message: str) -> None:
        if self.is_main:
            print(message, flush=True)


def setup_runtime(device: str | None = None, amp: str = "auto") -> Runtime:
    """Join the torchrun process group if there is one, pick the device ('auto'/None: cuda if present), resolve amp."""
    if amp not in AMP_CHOICES:
        raise UserError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    procs = init_processes(device or "auto")
    return Runtime(procs, resolve_amp(amp, procs.device))


def gather(obj: Any, rt: Runtime) -> list[Any]:
    """Every process's `obj`, in rank order (a list of one without DDP)."""
    return gather_objects(obj)


def load_checkpoint(path: str | os.PathLike, task: str) -> dict[str, Any]:
    """Read a checkpoint written by a dense run of `task` ('detect' or 'segment'); user mistakes are UserErrors."""
    ckpt = _load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("task") != task:
        found = ckpt.get("task") if isinstance(ckpt, dict) else None
        what = f"a '{found}' checkpoint" if found else "not a checkpoint of `mambaout detect/segment train`"
        raise UserError(f"{path} is {what}; `mambaout {task}` needs one written by `mambaout {task} train`")
    return ckpt


class RunLog:
    """Appends JSON lines to <output>/log.jsonl (main rank only) and keeps them for the caller."""

    def __init__(self, output: str | os.PathLike | None, rt: Runtime):
        self.path = Path(output) / "log.jsonl" if output and rt.is_main else None
        self.rt, self.records, self.start = rt, [], time.time()

    def __call__(self, **record: Any) -> None:
        record = {"time": round(time.time() - self.start, 2), **record}
        self.records.append(record)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def write_json(obj: Any, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def infinite(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """Batches forever, reshuffling (and telling a DistributedSampler the epoch) on each pass."""
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1
