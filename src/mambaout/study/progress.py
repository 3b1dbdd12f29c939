"""The study's progress lines: one per finished run, with the elapsed time and an overall ETA.

Each run comes with an estimate of its own cost (`estimate_s`: a few of its model's training steps timed on this
machine at one thread before the runs start, times its steps; `runner.probe_seconds`). As runs finish, the ratio of
measured to estimated seconds (per planned step: a run that converged early counts at its full length) corrects it,
and the ETA is that ratio times the estimated seconds of the unfinished runs, shared by the workers, plus the cost
measurements still to come. Runs that will converge early are not foreseen: the ETA is for whole budgets.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


class Progress:
    """Prints "[k/N] <run>: <what happened> · elapsed x min, ETA y min" lines to `stream`.

    Example:
        >>> p = Progress([10.0, 30.0], workers=1, tail_s=0.0)
        >>> p.eta_s()
        40.0
        >>> p.done(0, 20.0, "digits conv seed 0: 97.5 %")  # doctest: +SKIP
        [1/2] digits conv seed 0: 97.5 % · elapsed 0.3 min, ETA 1.0 min
    """

    def __init__(self, estimates_s: list[float], workers: int, tail_s: float = 0.0, stream: TextIO | None = None):
        self.estimates = list(estimates_s)
        self.finished: dict[int, float] = {}
        self.workers = max(1, workers)
        self.tail_s = tail_s
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()

    def speed(self) -> float:
        """Measured / estimated seconds over the finished runs (1.0 before any finishes)."""
        if not self.finished:
            return 1.0
        return sum(self.finished.values()) / max(sum(self.estimates[i] for i in self.finished), 1e-9)

    def eta_s(self) -> float:
        left = sum(e for i, e in enumerate(self.estimates) if i not in self.finished)
        return self.speed() * (left / self.workers + self.tail_s)

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def done(self, index: int, seconds: float, text: str, fraction: float = 1.0) -> None:
        """Run `index` finished after `seconds` of training, having done `fraction` of its planned steps (less than 1
        where it converged early); print `text` with the counts, elapsed time and ETA."""
        self.finished[index] = seconds / max(fraction, 1e-9)
        elapsed = time.perf_counter() - self.start
        self.line(
            f"[{len(self.finished)}/{len(self.estimates)}] {text} · elapsed {_minutes(elapsed)}, "
            f"ETA {_minutes(self.eta_s())}"
        )
