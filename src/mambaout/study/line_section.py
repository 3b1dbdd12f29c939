"""What the line task adds to the study's report: its prose, its tables (AUROC per anomaly kind, streaming cost)
and its two figures (score timeline, streaming memory and latency). Everything line-specific of the report is here.
"""

from __future__ import annotations

from typing import Any

from mambaout.engine.records import format_count
from mambaout.study.figures import figure_png
from mambaout.study.stats import seed_values

KIND_COLOURS = {"local": "tab:red", "temporal": "tab:orange", "contextual": "tab:purple"}
TIMELINE_FRAMES = 2000  # frames of the first test video the timeline shows
TIMELINE_CAPTION = (
    "The line task, the first 2,000 frames of the first test video, first seed: each detector's alarm score per "
    "frame (the larger of its patch and temporal branch, each on the scale of its normal validation scores: 0 their "
    "median, 1 their 0.99 quantile) with its alarm threshold (dashed: the 0.99 quantile of that score on normal "
    "validation video); shaded spans are labelled anomalies, coloured by kind (red local, orange temporal, purple "
    "contextual)."
)
STREAM_CAPTION = (
    "The line task, streamed one frame at a time on one thread: the temporal model's state memory (left) and step "
    "latency (right, median of the last 50 steps) after 10², 10³ and 10⁴ frames. The conv keeps its last k-1 "
    "inputs and the SSM a fixed state; causal attention keeps every past key and value, so its memory grows with the "
    "frames seen (the encoder's cost per frame is the same for all and left out)."
)


def line_task(results: dict[str, Any]) -> dict[str, Any] | None:
    return next((t for t in results["tasks"].values() if any("stream" in s for s in t["mixers"].values())), None)


def line_paragraphs(task: dict[str, Any]) -> list[str]:
    """The line task's evidence: AUROC per anomaly kind and the streaming cost, as Markdown tables."""
    mixers = task["mixers"]
    if not any("auroc_per_kind" in s for s in mixers.values()):
        return []
    kinds = sorted({k for s in mixers.values() for k in s.get("auroc_per_kind", {})})
    cfg = task["config"]
    head = "| mixer | AUROC micro | " + " | ".join(f"AUROC {k}" for k in kinds) + " | params | MACs/frame |"
    rows = [head, "|" + "---|" * (4 + len(kinds))]
    for m, s in mixers.items():
        per_kind = s.get("auroc_per_kind", {})
        seeds = s.get("auroc_per_kind_seeds", {})
        cells = [
            f"{100 * per_kind[k]:.1f} ({' / '.join(f'{100 * v:.0f}' for v in seeds.get(k, []))})"
            if k in per_kind
            else "-"
            for k in kinds
        ]
        rows.append(
            f"| {m} | {100 * s['accuracy_mean']:.1f} ({seed_values(s)}) | "
            + " | ".join(cells)
            + f" | {format_count(s.get('params'))} | {format_count(s.get('macs'))} |"
        )
    frames = sorted({int(n) for s in mixers.values() for n in s.get("stream", {})})
    stream = [
        "| mixer | "
        + " | ".join(f"step ms @{n}" for n in frames)
        + " | "
        + " | ".join(f"state KiB @{n}" for n in frames)
        + " |",
        "|" + "---|" * (1 + 2 * len(frames)),
    ]
    for m, s in mixers.items():
        st = s.get("stream", {})
        stream.append(
            f"| {m} | "
            + " | ".join(f"{st[str(n)]['step_ms']:.2f}" for n in frames)
            + " | "
            + " | ".join(f"{st[str(n)]['state_bytes'] / 1024:.1f}" for n in frames)
            + " |"
        )
    context = cfg.get("context_frames")
    note = (
        f"For this task 'accuracy' is frame-level AUROC of the alarm score (%, on the frames the burn-in judges), "
        "per seed in brackets. Contextual "
        f"anomalies need {context} frames of memory (a cycle is {cfg.get('cycle_frames')} frames); the causal conv "
        f"reaches {cfg.get('conv_reach')} frames back: the paper's case for an SSM (long and causal)."
    )
    set_up = cfg.get("set_up_cpu_seconds")
    if set_up:
        parts = ", ".join(f"{part.replace('_', ' ')} {s:.0f}" for part, s in set_up.items())
        note += (
            f" Every run shares the task's set-up, which its train s leaves out: {sum(set_up.values()):.0f} CPU "
            f"seconds ({parts})."
        )
    from mambaout.anomaly.verdict import verdict_paragraphs

    # the verdict on memory (intervals over events, ceilings, probe) is the line's own: anomaly/verdict.py
    return [note, "\n".join(rows), *verdict_paragraphs(task), "**Streaming cost** (temporal model, one thread):"] + [
        "\n".join(stream)
    ]


def timeline_png(task: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = {m: s["timeline"] for m, s in task["mixers"].items() if s.get("timeline")}
    fig, axes = plt.subplots(len(lines), 1, figsize=(10, 1.6 * len(lines) + 0.6), sharex=True, squeeze=False)
    for ax, (mixer, tl) in zip(axes[:, 0], lines.items()):
        scores = tl["scores"][:TIMELINE_FRAMES]  # a stretch in which single events stay visible
        kinds = (tl.get("kinds") or ["anomaly" if v else "" for v in tl["labels"]])[:TIMELINE_FRAMES]
        start = None
        for t in range(len(kinds) + 1):
            kind = kinds[t] if t < len(kinds) else ""
            if start is not None and (t == len(kinds) or kind != kinds[start]):
                ax.axvspan(start, t, color=KIND_COLOURS.get(kinds[start], "tab:gray"), alpha=0.25, lw=0)
                start = None
            if start is None and kind:
                start = t
        ax.plot(scores, lw=0.7, color="black")
        if tl.get("threshold") is not None:
            ax.axhline(tl["threshold"], ls="--", lw=0.8, color="tab:blue")
        ax.set_ylabel(mixer, rotation=0, ha="right", va="center")
    axes[-1, 0].set_xlabel(f"frame of {next(iter(lines.values()))['video']}")
    fig.tight_layout()
    return figure_png(fig)


def streaming_png(task: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, lat) = plt.subplots(1, 2, figsize=(9, 3.2))
    for mixer, s in task["mixers"].items():
        st = s.get("stream") or {}
        if not st:
            continue
        frames = sorted(int(n) for n in st)
        if st[str(frames[0])]["state_bytes"]:  # `frame` keeps no state
            mem.plot(frames, [st[str(n)]["state_bytes"] / 1024 for n in frames], marker="o", label=mixer)
        lat.plot(frames, [st[str(n)]["step_ms"] for n in frames], marker="o", label=mixer)
    for ax, label in ((mem, "state memory (KiB)"), (lat, "step latency (ms)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("frames seen")
        ax.set_ylabel(label)
    mem.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)
