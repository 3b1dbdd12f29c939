"""`mambaout plot RUN`: the curves of a run (loss, accuracy, learning rate per epoch) from its summary.csv."""

from __future__ import annotations

import math
from pathlib import Path

from mambaout.engine.records import read_summary
from mambaout.errors import UserError


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Draw `<run>/curves.png` (or `output`): train/val loss, val top-1/top-5, and lr against epoch.

    Example:
        >>> plot_run("runs/mambaout_pico-20250101-120000")  # doctest: +SKIP
        PosixPath('runs/mambaout_pico-20250101-120000/curves.png')
    """
    run_dir = Path(run_dir)
    if not (run_dir / "summary.csv").is_file():
        raise UserError(f"{run_dir} has no summary.csv; give a run folder written by `mambaout train`")
    rows = read_summary(run_dir)
    if not rows:
        raise UserError(f"{run_dir}/summary.csv has no finished epoch yet; plot again after the first epoch")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], label="val")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["top1"] for r in rows], label="top-1")
    ax_acc.plot(epochs, [r["top5"] for r in rows], label="top-5")
    if any(not math.isnan(r.get("ema_top1", math.nan)) for r in rows):
        ax_acc.plot(epochs, [r["ema_top1"] for r in rows], label="EMA top-1")
    best = max(rows, key=lambda r: r["top1"])
    ax_acc.set(
        title=f"val accuracy (best top-1 {best['top1']:.1f}% at epoch {best['epoch']:.0f})", xlabel="epoch", ylabel="%"
    )
    ax_acc.legend()
    ax_lr.plot(epochs, [r["lr"] for r in rows])
    ax_lr.set(title="learning rate (end of epoch)", xlabel="epoch", yscale="log")
    fig.suptitle(run_dir.name)
    output = Path(output) if output else run_dir / "curves.png"
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
