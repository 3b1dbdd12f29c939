"""Data order as a function of (seed, epoch): the same batches on every run, every resume, every process count.

The training sampler is torch's `DistributedSampler` (also with one process): a permutation seeded by seed + epoch,
process r taking positions r, r + N, r + 2N, ... With drop_last, the union of the N processes' k-th batches of b
images is exactly the k-th batch of one process with batch N x b, which is what makes N processes agree with one.
`skip` drops the first samples of the epoch's share, for a restart in the middle of an epoch. The validation set is
split into strided shards with no padding, so summed counts give exact metrics.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset


class EpochSampler(DistributedSampler):
    """`DistributedSampler` that can start the epoch after its first `skip` samples.

    Example:
        >>> sampler = EpochSampler(dataset, num_replicas=1, rank=0, seed=0)  # doctest: +SKIP
        >>> sampler.set_epoch(3); sampler.skip = 64  # resume after 64 samples of epoch 3  # doctest: +SKIP
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return self.num_samples - self.skip


def train_loader(
    dataset: Dataset,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
    **kwargs: Any,
) -> DataLoader:
    """Shuffled, sharded, full batches only (Mixup needs even, equal-size batches). `kwargs`: e.g. collate_fn."""
    sampler = EpochSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=False,  # workers must be re-created each epoch to pick up the dataset's epoch
        # Its own generator: starting an iterator must not draw from the global one (drop path, Mixup), or a
        # mid-epoch restart, which starts one at another moment, would shift those streams.
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def eval_loader(
    dataset: Dataset,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    pin_memory: bool = False,
    **kwargs: Any,
) -> DataLoader:
    """Process r scores images r, r + N, r + 2N, ... (no padding, no duplicates)."""
    shard = Subset(dataset, range(rank, len(dataset), world_size)) if world_size > 1 else dataset
    return DataLoader(
        shard,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),  # as above: leave the global generator alone
        **kwargs,
    )
