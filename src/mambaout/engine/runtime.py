"""Where and how a run computes: processes and device, precision, the DDP/compile wrap, seeded loaders, console.

Every pipeline (classification, detection, segmentation, the study, line video) starts from one `Runtime`:
one process per GPU under `torchrun`, a world of one under plain `python`. `amp` speaks one language everywhere:
auto (bf16 on GPUs that have it, else full precision), bf16, fp16 (with loss scaling) or none.

Example:
    >>> rt = setup_runtime("cpu", "none")
    >>> rt.device.type, rt.world_size, rt.precision
    ('cpu', 1, 'fp32')
"""

from __future__ import annotations

import contextlib
import random
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from mambaout.data.loader import eval_loader, train_loader
from mambaout.engine.config import AMP_CHOICES
from mambaout.engine.distributed import Processes, init_processes
from mambaout.errors import UserError

AMP_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def exporting() -> bool:
    """True while torch.jit.trace, torch.onnx.export or torch.export records the call: code with a fast path of its
    own (a custom op, oneDNN's fused kernels) then runs the plain tensor ops any runtime can execute. False in
    TorchScript (a scripted function may call it: a scripted graph is not a trace)."""
    if torch.jit.is_scripting():
        return False
    # torch.onnx is imported lazily (0.1 s): when nothing has imported it, nothing is exporting to ONNX
    onnx = "torch.onnx" in sys.modules and torch.onnx.is_in_onnx_export()
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.6
    return torch.jit.is_tracing() or onnx or (is_exporting is not None and is_exporting())


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """'auto' -> bf16 on a CUDA device that supports it, else full precision."""
    if amp not in AMP_CHOICES:
        raise UserError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp == "fp16" and device.type != "cuda":
        raise UserError("--amp fp16 needs a CUDA device; on CPU use --amp bf16 or --amp none")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]


def seed_all(seed: int) -> None:
    """Python's, NumPy's and torch's global generators from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of the main-process generators (drop path, Mixup, random crops) at the start of an epoch."""
    return seed * 1_000_003 + epoch * 1_009 + rank


@dataclass
class Runtime:
    procs: Processes
    amp: torch.dtype | None = None
    quiet: bool = False  # `log` prints nothing (the study's runs, of which the study prints one line each)

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

    def wrap(self, model: torch.nn.Module, compile: bool = False) -> torch.nn.Module:
        """What the training step calls: DistributedDataParallel around `model` in a multi-process run (the model
        itself otherwise), optionally `torch.compile`d."""
        forward = model
        if self.distributed:
            ids = [self.device] if self.device.type == "cuda" else None
            forward = DistributedDataParallel(model, device_ids=ids)
        return torch.compile(forward) if compile else forward

    def train_loader(self, dataset: Dataset, batch_size: int, seed: int, workers: int, **kwargs: Any) -> DataLoader:
        """This process's shuffled share, `batch_size` per process, full batches, order a function of (seed, epoch);
        `loader.sampler.skip` starts an epoch part-way (a mid-epoch resume)."""
        pin = self.device.type == "cuda"
        return train_loader(dataset, batch_size, self.rank, self.world_size, seed, workers, pin, **kwargs)

    def eval_loader(self, dataset: Dataset, batch_size: int, workers: int, **kwargs: Any) -> DataLoader:
        """This process's strided shard of `dataset`, in order, no padding (summed counts give exact metrics)."""
        pin = self.device.type == "cuda"
        return eval_loader(dataset, batch_size, self.rank, self.world_size, workers, pin, **kwargs)

    def log(self, message: str) -> None:
        if self.is_main and not self.quiet:
            print(message, flush=True)


def setup_runtime(device: str | None = None, amp: str = "auto") -> Runtime:
    """Join the torchrun process group if there is one, pick the device ('auto'/None: cuda if present), resolve amp."""
    procs = init_processes(device or "auto")
    return Runtime(procs, resolve_amp(amp, procs.device))


@contextlib.contextmanager
def intra_op_threads(threads: int):
    """Run with `threads` torch CPU threads (0: leave torch's choice), restoring the count afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
