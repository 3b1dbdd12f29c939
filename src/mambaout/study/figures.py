"""The study's figures: accuracy against MACs per task and the latency sweep, each with its caption."""

from __future__ import annotations

import io
from typing import Any


def figure_png(fig) -> bytes:
    """A matplotlib Figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


ACCURACY_CAPTION = (
    "One panel per task: accuracy against MACs per sample, one colour per mixer (legend). Small dots: the accuracy "
    "of each seed. Large marker and whiskers: the mean over seeds ± one sample standard deviation, clipped to "
    "[0, 100] %. Grey dashed line: chance level, where the task has one."
)


def clipped_error(mean: float, std: float) -> tuple[float, float]:
    """(down, up) whisker lengths of mean ± std in percent, cut at 0 and 100: 99.0 ± 3.0 -> (3.0, 1.0)."""
    return min(std, mean), min(std, 100.0 - mean)


def accuracy_figure(results: dict[str, Any]):
    """The accuracy-vs-MACs plot as a matplotlib Figure (see ACCURACY_CAPTION)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    tasks = results["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 3.8), squeeze=False)
    for ax, (name, task) in zip(axes[0], tasks.items()):
        for i, (mixer, s) in enumerate(task["mixers"].items()):
            x = s.get("macs", 0) / 1e6
            colour = f"C{i}"
            accs = [100 * a for a in s.get("accuracies") or [s["accuracy_mean"]]]
            ax.scatter([x] * len(accs), accs, s=14, color=colour, alpha=0.6, zorder=3)
            mean, std = 100 * s["accuracy_mean"], 100 * s["accuracy_std"]
            down, up = clipped_error(mean, std)
            ax.errorbar(
                [x],
                [mean],
                yerr=[[down], [up]],
                fmt="o",
                ms=7,
                mfc="none",
                color=colour,
                capsize=4,
                label=mixer,
                zorder=4,
            )
        chance = task["config"].get("chance")
        if chance:
            ax.axhline(100 * chance, color="grey", ls="--", lw=1)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.margins(x=0.2)
        ax.set_ylim(0, 103)
        ax.set_xlabel("MACs per sample (M)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_accuracy(results: dict[str, Any]) -> bytes:
    """PNG of `accuracy_figure`."""
    return figure_png(accuracy_figure(results))


def plot_sweep_png(sweep: dict[str, Any]) -> bytes:
    from mambaout.study.sweep import plot_sweep

    buf = io.BytesIO()
    plot_sweep(sweep, buf)
    return buf.getvalue()


SWEEP_CAPTION = (
    "Forward latency of one Gated CNN block per mixer against the sequence length L (log-log, batch 1, one thread). "
    "Dotted grey: the attention kernel alone. Red dashed line: the length at which the paper's FLOP count predicts "
    "the attention kernel to cost as much as the rest of its block (6·D, 12·D for causal attention). Black "
    "dash-dotted line: where it did on this machine."
)
