"""The study's progress lines: one per finished run, with the elapsed time and an overall ETA.

Each run comes with an estimate of its own cost (`estimate_s`: a few of its model's training steps timed on this machine
at one thread before the runs start, times its steps; `runner.probe_seconds`). As runs finish, the ratio of measured to
estimated seconds (per planned step: a run that converged early counts at its full length; a run that shared the cores
with a task's set-up aside does not count) corrects it, and the ETA is that ratio times the estimated seconds of the
runs not yet done (less what the running ones have done), shared by the workers, plus the cost measurements still to
come. Runs that will converge early are not foreseen: the ETA is for whole budgets.
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
        self.crowded: set[int] = set()
        self.starts: dict[int, float] = {}  # index -> when it started (perf_counter), for the runs that did
        self.workers = max(1, workers)
        self.tail_s = tail_s
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()

    def add(self, estimates_s: list[float]) -> None:
        """Runs that join after the start (a task set up aside), with their estimates."""
        self.estimates += estimates_s

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    def speed(self) -> float:
        """Measured / estimated seconds over the finished runs that had their core to themselves (1.0 before any)."""
        alone = [i for i in self.finished if i not in self.crowded]
        if not alone:
            return 1.0
        return sum(self.finished[i] for i in alone) / max(sum(self.estimates[i] for i in alone), 1e-9)

    def started(self, index: int) -> None:
        self.starts[index] = time.perf_counter()

    def eta_s(self) -> float:
        """Seconds left: the estimates of the runs not started, and what is left of those running (their estimate
        less the time they have run, at the measured speed), shared by the workers; then the measurements."""
        speed, now = self.speed(), time.perf_counter()
        left = sum(
            max(e - (now - self.starts[i]) / speed, 0.0) if i in self.starts else e
            for i, e in enumerate(self.estimates)
            if i not in self.finished
        )
        return speed * (left / self.workers + self.tail_s)

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def done(self, index: int, seconds: float, text: str, fraction: float = 1.0, crowded: bool = False) -> None:
        """Run `index` finished after `seconds` of training, having done `fraction` of its planned steps (less than 1
        where it converged early); print `text` with the counts, elapsed time and ETA. A `crowded` run shared the cores
        with the study's own set-up work (a task set up aside): it says nothing of the machine's speed for the runs
        after it."""
        self.finished[index] = seconds / max(fraction, 1e-9)
        if crowded:
            self.crowded.add(index)
        self.line(
            f"[{len(self.finished)}/{len(self.estimates)}] {text} · elapsed {_minutes(self.elapsed_s())}, "
            f"ETA {_minutes(self.eta_s())}"
        )
