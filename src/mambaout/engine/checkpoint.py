"""Nothing is lost: atomic checkpoints with everything needed to continue a run as if it had never stopped.

`last.pt` holds the model, optimizer, scheduler, grad scaler, EMA, epoch, step, every process's RNG states, the
recipe and the class names. Each file is written to a temporary file in the same folder, flushed and fsync'ed, then
moved over the old one with `os.replace` (atomic on POSIX and Windows), and the folder is fsync'ed: a process
killed at any moment leaves either the previous complete file or the new complete file, never a torn one.
`best.safetensors`/`last.safetensors` are the bare model weights, which `mambaout.create_model(pretrained=...)`
loads.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes

from mambaout.errors import UserError

CHECKPOINT_VERSION = 1


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Write a file through `write(f)` so that `path` is always either the old or the new complete file.

    Example:
        >>> atomic_write("runs/x/last.pt", lambda f: torch.save(state, f))  # doctest: +SKIP
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")  # same folder: os.replace never crosses file systems
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """`torch.save(state)` to `path`, atomically."""
    return atomic_write(path, lambda f: torch.save(dict(state, version=CHECKPOINT_VERSION), f))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a `last.pt` written by `save_checkpoint` (tensors and plain Python values only: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; --resume takes a run folder that holds last.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(
            f"checkpoint {path} cannot be read ({str(e).splitlines()[0][:160]}); it is not a last.pt"
        ) from e


def export_weights(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """The model weights alone as safetensors (what `create_model(name, pretrained=path)` loads)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    data = safetensors_bytes(tensors, metadata={k: str(v) for k, v in metadata.items()})
    return atomic_write(path, lambda f: f.write(data))


def rng_state() -> dict[str, Any]:
    """This process's generator states in a form `torch.load(weights_only=True)` reads back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return dict(
        python=random.getstate(),
        numpy=(kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    )


def set_rng_state(state: Mapping[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
