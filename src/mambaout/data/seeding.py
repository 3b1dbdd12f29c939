"""Augmentation as a function of (seed, epoch, sample index), whatever the number of workers or where a run resumed.

timm's transforms draw from Python's `random`, NumPy's and torch's global generators. `SeededSamples` seeds all three
from (seed, epoch, index) before each sample and, in the main process (`num_workers=0`), restores the previous
states afterwards so that its own streams (drop path, Mixup) are untouched. That makes a sample's augmentation identical
in a resumed run, in a run with another number of DataLoader workers, and across a mid-epoch restart.
"""

from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample in one epoch (a fixed mixing of the three integers)."""
    return ((seed * 1_000_003 + epoch) * 2_147_483_647 + index) % (2**63 - 1)


@contextmanager
def seeded_rng(seed: int, restore: bool = True):
    """Seed python/numpy/torch (CPU) generators for the block, then put back their previous states if `restore`."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if restore else None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # CPU only: a CUDA stream in the main process stays as it was
    try:
        yield
    finally:
        if states is not None:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


class SeededSamples(Dataset):
    """Dataset wrapper: sample `i` of epoch `e` is drawn with the generators seeded from (seed, e, i).

    Example:
        >>> data = SeededSamples(train_dataset, seed=0)  # doctest: +SKIP
        >>> data.set_epoch(3); image, target = data[17]  # same image and augmentation on every run  # doctest: +SKIP
    """

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Call before building the epoch's iterator (workers are re-created each epoch and copy this value)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        # Never forward `dataset` (unpickling) or dunders: DataLoader would find the inner `__getitems__` and
        # fetch batches around this wrapper.
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        # A worker process owns its generators; only the main process (num_workers=0) needs its streams back.
        in_main_process = get_worker_info() is None
        with seeded_rng(sample_seed(self.seed, self.epoch, index), restore=in_main_process):
            return self.dataset[index]
