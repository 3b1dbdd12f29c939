"""What a run leaves to read (rank 0 only): console lines, `summary.csv` per evaluated epoch, `log.jsonl` per logged
step, and TensorBoard logs.

`summary.csv` has one row per epoch that ended in an evaluation: epoch, train_loss, the task's metrics, lr (at the end
of the epoch), images_per_s (training throughput over all processes), epoch_s, then the EMA's metrics when an EMA is
kept; a classification run's columns are `SUMMARY_COLUMNS` (+ ema_top1). A resumed run first drops rows of epochs it
will train again, so the file always describes one uninterrupted run. TensorBoard gets loss and lr per update and the
epoch rows, all against the update count.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

SUMMARY_COLUMNS = ["epoch", "train_loss", "val_loss", "top1", "top5", "lr", "images_per_s", "epoch_s"]


def read_summary(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of `<run>/summary.csv` as floats (empty cells as NaN)."""
    path = Path(run_dir) / "summary.csv"
    with open(path, newline="") as f:
        return [
            {k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(f)
        ]


class RunRecords:
    """Console lines, summary.csv and TensorBoard for one run; every method is a no-op when `enabled` is False.

    The columns of summary.csv are those of its first row (or of the file a resumed run continues).

    Example:
        >>> records = RunRecords(Path("runs/x"), enabled=True, tensorboard=True, start_epoch=0)  # doctest: +SKIP
        >>> records.epoch(dict(epoch=1, train_loss=2.1, val_loss=1.9, lr=1e-3, images_per_s=900.0, epoch_s=2.0),
        ...               epochs=30, metrics="val loss 1.9")  # doctest: +SKIP
    """

    def __init__(self, run_dir: Path | None, enabled: bool, tensorboard: bool, start_epoch: int, start_step: int = 0):
        self.run_dir, self.enabled = run_dir, enabled and run_dir is not None
        self.columns: list[str] | None = None
        self.writer = None
        if not self.enabled:
            return
        self._keep_rows_before(start_epoch)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # A resumed run drops the events a killed run wrote past its checkpoint (all tags use the update count).
            self.writer = SummaryWriter(
                log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None
            )

    def _keep_rows_before(self, start_epoch: int) -> None:
        path = self.run_dir / "summary.csv"
        if not path.exists():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if int(float(r["epoch"])) <= start_epoch]
            self.columns = list(reader.fieldnames or [])
        with open(path, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            out.writeheader()
            out.writerows(rows)

    def print(self, line: str) -> None:
        if self.enabled:
            print(line, flush=True)

    def step(self, global_step: int, loss: float, lr: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss_step", loss, global_step)
            self.writer.add_scalar("train/lr", lr, global_step)

    def epoch(self, row: dict[str, Any], epochs: int, global_step: int = 0, metrics: str = "") -> None:
        """Append one epoch to summary.csv and TensorBoard, and print its line (`metrics`: the task's words for its
        metrics)."""
        if not self.enabled:
            return
        path = self.run_dir / "summary.csv"
        new = self.columns is None
        self.columns = self.columns or list(row)
        with open(path, "a", newline="") as f:
            out = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                out.writeheader()
            out.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"epoch/{key}", value, global_step)
            self.writer.flush()
        self.print(
            f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}  train loss {row['train_loss']:.4f}  "
            + (f"{metrics}  " if metrics else "")
            + f"lr {row['lr']:.2e}  {row['images_per_s']:,.0f} img/s  {row['epoch_s']:.1f}s"
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RunLog:
    """Appends JSON lines to <output>/log.jsonl (when `enabled`) and keeps them for the caller; a run of a `stage`
    tags its lines with it.

    A resumed run first drops its lines past the step it resumes from (those of other stages stay), so the file
    describes one uninterrupted run.
    """

    def __init__(
        self, output: str | os.PathLike | None, enabled: bool = True, start_step: int = 0, stage: str | None = None
    ):
        self.path = Path(output) / "log.jsonl" if output and enabled else None
        self.stage = stage
        self.records: list[dict[str, Any]] = []
        self.start = time.time()
        if self.path is not None and self.path.exists():
            lines = self.path.read_text().splitlines()
            kept = [
                line
                for line in lines
                if json.loads(line).get("stage") != stage or json.loads(line).get("step", 0) <= start_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))

    def __call__(self, **record: Any) -> None:
        record = {"time": round(time.time() - self.start, 2), **({"stage": self.stage} if self.stage else {}), **record}
        self.records.append(record)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def write_json(obj: Any, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")
