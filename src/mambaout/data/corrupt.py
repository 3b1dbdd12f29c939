"""Unreadable images must not end a three-day run: skip them, name them, count them, and stop past a limit.

`SkipBadImages` wraps a dataset: when reading sample `i` raises (a truncated JPEG, a zero-byte file, a file that is
not an image), it logs the path and the error, marks the file bad, and returns the next readable sample instead, so
batches keep their size. Each bad file is logged and counted once per run, not once per epoch or per retry. The
marks and the count live in shared memory, so DataLoader worker processes add to the same number that the training
loop checks after every update (`check_limit`), where a run past the limit stops with one sentence. The paths also
go to a text file when `log_file` is given.
"""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

from torch.utils.data import Dataset, Subset

from mambaout.errors import UserError

_MAX_CONSECUTIVE = 50  # this many unreadable files in a row is a broken folder, not a few bad files


class SkipBadImages(Dataset):
    """Dataset wrapper that substitutes the next readable sample for an unreadable one.

    Example:
        >>> data = SkipBadImages(ImageFolder("train"), max_bad=100, log_file="runs/x/bad_images.txt")  # doctest: +SKIP
        >>> image, target = data[0]  # doctest: +SKIP
    """

    def __init__(self, dataset: Dataset, max_bad: int = 100, log_file: str | Path | None = None, counter=None):
        self.dataset, self.max_bad = dataset, max_bad
        self.log_file = str(log_file) if log_file else None
        context = multiprocessing.get_context()
        self.counter = counter if counter is not None else context.Value("i", 0)
        self.known_bad = context.Array("b", len(dataset))  # one byte per sample, shared with the workers

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):  # classes, targets, samples, ... of the wrapped dataset
        # Never forward `dataset` (unpickling) or dunders: DataLoader would find the inner `__getitems__` and
        # fetch batches around this wrapper.
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    @property
    def bad_count(self) -> int:
        return self.counter.value

    def path(self, index: int) -> str:
        dataset = self.dataset
        if isinstance(dataset, Subset):  # a --train-images subset of an ImageFolder
            dataset, index = dataset.dataset, dataset.indices[index]
        samples = getattr(dataset, "samples", None)
        return str(samples[index][0]) if samples is not None else f"sample {index}"

    def __getitem__(self, index: int):
        for offset in range(_MAX_CONSECUTIVE):
            i = (index + offset) % len(self.dataset)
            if self.known_bad[i]:
                continue
            try:
                return self.dataset[i]
            except Exception as e:  # decoders raise OSError, RuntimeError, ValueError, SyntaxError...
                self._record(i, e)
        raise RuntimeError(f"{_MAX_CONSECUTIVE} unreadable images in a row from {self.path(index)}; see the log above")

    def _record(self, index: int, error: Exception) -> None:
        with self.counter.get_lock():
            if self.known_bad[index]:  # another worker got there first
                return
            self.known_bad[index] = 1
            self.counter.value += 1
        message = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        print(f"warning: skipping unreadable image {self.path(index)} ({message})", file=sys.stderr, flush=True)
        if self.log_file:
            with open(self.log_file, "a") as f:
                f.write(f"{self.path(index)}\t{message}\n")

    def check_limit(self) -> None:
        """Raise a UserError when more images than `max_bad` have been unreadable."""
        if self.counter.value > self.max_bad:
            where = f"; they are listed in {self.log_file}" if self.log_file else ""
            raise UserError(
                f"{self.counter.value} image files could not be read, more than --max-bad-images {self.max_bad}"
                f"{where}; fix or remove them (or raise the limit) and resume"
            )
