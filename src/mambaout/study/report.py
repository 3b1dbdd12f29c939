"""The study's report: the terminal table, the verdicts, report.md and a self-contained report.html with plots.

Per task the report starts with one bottom-line sentence a decision can rest on ("Use the SSM: ...", "Keep the
gated conv: ...", or "Inconclusive: seeds disagree (...)"), then the evidence: the paper's prediction (the
long-sequence test on the tokens the mixers see, and whether the task is causal) and every comparison measured.
The SSM is compared with the conv (the ablation the paper makes: Mamba = Gated CNN + SSM).

How a comparison of mixer a with mixer b is decided (Δ = difference of their mean accuracies over seeds):

- test-set sampling error σ_s = sqrt(p(1-p)/n) at their pooled accuracy p, n the scored test items;
- a mixer's seeds *disagree* when their spread (best minus worst seed) exceeds SEED_AGREEMENT_SIGMAS·σ_s and
  MIN_DISAGREEMENT_POINTS (more than the test sample explains: two ±2σ_s bands that do not touch) and also exceeds
  |Δ|: then the outcome depends on the seed and the comparison is *inconclusive*, whatever the means say;
- otherwise Δ counts when |Δ| ≥ 2σ, σ = the larger of the two mixers' seed standard deviations and σ_s; smaller
  differences are "within noise".

A measurement that goes against the paper's prediction is said to contradict the paper.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

PAPER_CAUSAL_ATTENTION = "the paper: causal attention cost ViT-Ti 1.6 and ViT-S 0.9 ImageNet top-1 points"
SEED_AGREEMENT_SIGMAS = 4.0
MIN_DISAGREEMENT_POINTS = 2.0


def plural(n: int, word: str) -> str:
    """ "1 thread", "2 threads", "0 classes" (English plural for the words the study prints)."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}es" if word.endswith(("s", "sh", "ch", "x")) else f"{n} {word}s"


def _spread(s: dict[str, Any]) -> float:
    accs = s.get("accuracies") or [s["accuracy_mean"]]
    return 100 * (max(accs) - min(accs))


def seed_values(s: dict[str, Any]) -> str:
    """A mixer's per-seed accuracies as "40.4 and 99.7" (or "12.0, 24.3 and 99.5")."""
    values = [f"{100 * a:.1f}" for a in s.get("accuracies") or [s["accuracy_mean"]]]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Mixer summary `a` against `b`: Δ accuracy in points, 2σ noise level, seed agreement, cost ratios.

    Example:
        >>> s = lambda accs: dict(accuracy_mean=sum(accs) / len(accs), accuracy_std=0.0, accuracies=accs,
        ...                       eval_count=2048, train_seconds_mean=1.0)
        >>> compare(s([1.0, 0.56]), s([0.995, 0.997]))["seeds_disagree"]
        True
    """
    delta = 100 * (a["accuracy_mean"] - b["accuracy_mean"])
    p = (a["accuracy_mean"] + b["accuracy_mean"]) / 2
    sampling = 100 * math.sqrt(max(p * (1 - p), 0.0) / a["eval_count"])
    sigma = max(100 * a["accuracy_std"], 100 * b["accuracy_std"], sampling)
    bound = max(SEED_AGREEMENT_SIGMAS * sampling, MIN_DISAGREEMENT_POINTS)
    disagree = [k for k, s in (("a", a), ("b", b)) if _spread(s) > max(bound, abs(delta))]
    out = dict(
        delta_points=delta,
        noise_2sigma=2 * sigma,
        seed_bound_points=bound,
        seeds_disagree=bool(disagree),
        disagreeing=disagree,
        significant=not disagree and abs(delta) >= 2 * sigma,
    )
    for key in ("latency_ms_b1", "latency_ms_bN", "macs", "params", "peak_train_mem_mb", "state_mb"):
        if a.get(key) and b.get(key):
            out[f"{key}_ratio"] = a[key] / b[key]
    out["train_seconds_ratio"] = a["train_seconds_mean"] / max(b["train_seconds_mean"], 1e-9)
    return out


def _disagreement(names: tuple[str, str], summaries: tuple[dict, dict], c: dict[str, Any]) -> str:
    """ "ssm: 40.4 and 99.7" for each disagreeing side of a comparison, joined by "; "."""
    sides = dict(zip("ab", zip(names, summaries)))
    return "; ".join(f"{sides[k][0]}: {seed_values(sides[k][1])}" for k in c["disagreeing"])


def _cost(c: dict[str, Any]) -> str:
    """ "3.1× the latency and 2.5× the memory" (batch 1 latency, training-step memory), or "" when unmeasured."""
    parts = []
    if "latency_ms_b1_ratio" in c:
        parts.append(f"{c['latency_ms_b1_ratio']:.1f}× the latency")
    if "peak_train_mem_mb_ratio" in c:
        parts.append(f"{c['peak_train_mem_mb_ratio']:.1f}× the memory")
    if "state_mb_ratio" in c:  # a streaming task: per-frame latency and the state kept after 10⁴ frames
        parts.append(f"{c['state_mb_ratio']:.1f}× the streaming state")
    return " and ".join(parts)


def _delta_sentence(name_a: str, name_b: str, c: dict[str, Any], summaries: tuple[dict, dict] | None = None) -> str:
    cost = ""
    if "latency_ms_b1_ratio" in c:
        at_n = f"; {c['latency_ms_bN_ratio']:.1f}x at batch N" if "latency_ms_bN_ratio" in c else ", streaming"
        cost = (
            f" at {c['latency_ms_b1_ratio']:.1f}x the latency (batch 1{at_n}), {c.get('macs_ratio', 0):.2f}x the MACs "
            f"and {c['train_seconds_ratio']:.1f}x the training time"
        )
    if c.get("seeds_disagree"):
        return (
            f"{name_a} vs {name_b}: inconclusive (seeds disagree: "
            f"{_disagreement((name_a, name_b), summaries, c)}; Δ of the means = {c['delta_points']:+.1f} points)"
        )
    if not c["significant"]:
        return (
            f"{name_a} vs {name_b}: within noise (Δ = {c['delta_points']:+.1f} points, |Δ| < 2σ = "
            f"{c['noise_2sigma']:.1f}){cost}"
        )
    return f"{name_a} vs {name_b}: {c['delta_points']:+.1f} points (2σ = {c['noise_2sigma']:.1f}){cost}"


def bottom_line(mixers: dict[str, dict[str, Any]], c: dict[str, Any] | None) -> str:
    """The one sentence a decision rests on: SSM vs the gated conv (`c` = compare(ssm, conv)), per the rules above.

    Example:
        >>> bottom_line({"conv": {}, "ssm": {}}, dict(delta_points=0.3, significant=False, noise_2sigma=2.0,
        ...             seeds_disagree=False, latency_ms_b1_ratio=3.1))
        'Keep the gated conv: the SSM adds nothing measurable here (+0.3 points, noise ±2.0) at 3.1× the latency.'
    """
    if c is None:
        scored = {m: s for m, s in mixers.items() if "accuracy_mean" in s}
        best = max(scored, key=lambda m: scored[m]["accuracy_mean"])
        return (
            f"No SSM-vs-gated-conv comparison here (mixers: {', '.join(mixers)}); the best is {best} at "
            f"{100 * scored[best]['accuracy_mean']:.1f} %."
        )
    cost = _cost(c)
    if c["seeds_disagree"]:
        return f"Inconclusive: seeds disagree ({_disagreement(('ssm', 'conv'), (mixers['ssm'], mixers['conv']), c)})."
    if c["significant"] and c["delta_points"] > 0:
        return f"Use the SSM: {c['delta_points']:+.1f} points over the gated conv" + (f" at {cost}." if cost else ".")
    if c["significant"]:
        return f"Keep the gated conv: the SSM is {-c['delta_points']:.1f} points worse" + (
            f" at {cost}." if cost else "."
        )
    return (
        f"Keep the gated conv: the SSM adds nothing measurable here ({c['delta_points']:+.1f} points, noise "
        f"±{c['noise_2sigma']:.1f})" + (f" at {cost}." if cost else ".")
    )


def _cheaper_alternative(verdict: dict[str, Any]) -> str:
    """ " Causal attention does as well at 0.7× the SSM's latency." when the SSM wins and attention matches it."""
    main = verdict.get("ssm_vs_conv")
    if not main or not main["significant"] or main["delta_points"] <= 0:
        return ""
    for name, label in (("attn_causal", "Causal attention"), ("attn", "Attention")):
        c = verdict.get(f"ssm_vs_{name}")
        if c and not c["seeds_disagree"] and c.get("latency_ms_b1_ratio", 0) > 1:
            if not c["significant"]:
                return f" {label} does as well (within noise) at {1 / c['latency_ms_b1_ratio']:.1f}× the SSM's latency."
            if c["delta_points"] < 0:
                return (
                    f" {label} does better ({-c['delta_points']:+.1f} points) at "
                    f"{1 / c['latency_ms_b1_ratio']:.1f}× the SSM's latency."
                )
    return ""


def task_verdict(task: dict[str, Any]) -> dict[str, Any]:
    """Bottom line, prediction and measured comparisons for one task of results.json (see the module docstring)."""
    mixers, pred = task["mixers"], task["prediction"]
    expected = pred["ssm_expected_to_help"]
    lines = []
    verdict = dict(
        expected_to_help=expected,
        prediction=(
            f"L = {pred['seq_len']} tokens at width D = {pred['dim']}, r_L = L/6D = {pred['r_L']:.2f}; "
            f"{pred['verdict']}. SSM {'expected' if expected else 'not expected'} to help."
        ),
    )
    main = None
    if "ssm" in mixers and "conv" in mixers:
        main = c = compare(mixers["ssm"], mixers["conv"])
        verdict["ssm_vs_conv"] = c
        helped = c["significant"] and c["delta_points"] > 0
        if c["seeds_disagree"]:
            agree = "the paper's prediction cannot be checked"
        elif expected:
            agree = "agrees with the paper" if helped else "contradicts the paper's expectation (in this budget)"
        else:
            agree = "contradicts the paper" if helped else "agrees with the paper (Hypothesis 1)"
        verdict["agreement"] = agree
        lines.append(f"{_delta_sentence('ssm', 'conv', c, (mixers['ssm'], mixers['conv']))}: {agree}.")
    for a, b, note in (
        ("attn_causal", "conv", ""),
        ("attn", "conv", ""),
        ("ssm", "attn_causal", ""),
        ("ssm", "attn", ""),
        ("attn_causal", "attn", f" ({PAPER_CAUSAL_ATTENTION})"),
    ):
        if a in mixers and b in mixers and not (a == "attn_causal" and b == "conv" and "attn" in mixers):
            c = compare(mixers[a], mixers[b])
            verdict[f"{a}_vs_{b}"] = c
            lines.append(_delta_sentence(a, b, c, (mixers[a], mixers[b])) + note + ".")
    verdict["bottom_line"] = bottom_line(mixers, main) + _cheaper_alternative(verdict)
    verdict["measured"] = lines or ["one mixer only: nothing to compare"]
    return verdict


def _fmt_int(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


TABLE_COLUMNS = (
    "task",
    "mixer",
    "accuracy %",
    "per seed %",
    "params",
    "MACs",
    "train s",
    "ms b1",
    "ms bN",
    "train MB",
)


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for task_name, task in results["tasks"].items():
        for mixer, s in task["mixers"].items():
            rows.append(
                [
                    task_name,
                    mixer,
                    f"{100 * s['accuracy_mean']:.1f} ± {100 * s['accuracy_std']:.1f}",
                    " / ".join(f"{100 * a:.1f}" for a in s.get("accuracies", [])) or "-",
                    _fmt_int(s.get("params")),
                    _fmt_int(s.get("macs")),
                    f"{s['train_seconds_mean']:.0f}",
                    f"{s['latency_ms_b1']:.1f}" if "latency_ms_b1" in s else "-",
                    f"{s['latency_ms_bN']:.1f}" if "latency_ms_bN" in s else "-",
                    f"{s['peak_train_mem_mb']:.0f}" if "peak_train_mem_mb" in s else "-",
                ]
            )
    return rows


def environment_line(meta: dict[str, Any]) -> str:
    """ "cpu (AMD EPYC, 2 cores, AVX512), 1 thread per run in 2 worker processes, load average 0.3 → 2.1" """
    env = meta["environment"]
    where = env["device"] + (f" ({env['cpu']})" if env.get("cpu") and env["device"] == "cpu" else "")
    text = f"{where}, {plural(env['threads'], 'thread')} per run"
    if meta.get("workers"):
        text += f" in {plural(meta['workers'], 'worker process')}"
    load = meta.get("load")
    if load:
        text += (
            f"; load average {load['start']:.1f} at the start, {load['after_training']:.1f} after training, "
            f"{load['measuring'][0]:.1f} → {load['measuring'][1]:.1f} while measuring costs"
        )
    return text


def format_table(results: dict[str, Any]) -> str:
    """The terminal table: one row per (task, mixer), accuracy as mean ± std and per seed; then the setup."""
    rows = [list(TABLE_COLUMNS)] + table_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    meta = results["meta"]
    lines.append(
        f"{plural(len(meta['seeds']), 'seed')} ({', '.join(map(str, meta['seeds']))}), budget {meta['budget']!r}, "
        f"{environment_line(meta)}; wall time {meta['wall_seconds'] / 60:.1f} min. ms bN = latency at the training "
        "batch size; train MB = peak activation memory of one training step."
    )
    return "\n".join(lines)


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
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
    import matplotlib.pyplot as plt

    fig = accuracy_figure(results)
    png = _figure_png(fig)
    plt.close(fig)
    return png


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


def _sections(results: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Report content as (heading, paragraphs), shared by the Markdown and HTML writers; bottom lines first."""
    meta = results["meta"]
    env = meta["environment"]
    out = [
        (
            "Bottom line",
            ["\n".join(f"- **{name}:** {task['verdict']['bottom_line']}" for name, task in results["tasks"].items())],
        )
    ]
    for name, task in results["tasks"].items():
        v = task["verdict"]
        cfg = task["config"]
        desc = ", ".join(f"{k}={val}" for k, val in cfg.items() if k not in ("task", "classes"))
        out.append(
            (
                f"Task: {name}",
                [
                    f"**{v['bottom_line']}**",
                    f"**Paper's prediction:** {v['prediction']}",
                    "**Measured:**",
                    "\n".join(f"- {line}" for line in v["measured"]),
                    f"Setup: {desc}; {task['budget']['steps']} steps of batch {task['budget']['batch_size']}.",
                    *line_paragraphs(task),
                ],
            )
        )
    if results.get("sweep"):
        from mambaout.study.sweep import format_sweep

        out.append(("Latency vs sequence length", [f"```\n{format_sweep(results['sweep'])}\n```"]))
    out.append(
        (
            "Setup",
            [
                f"Command: `{meta['command']}`. Budget {meta['budget']!r}, seeds {meta['seeds']}, torch "
                f"{env['torch']}, {environment_line(meta)}; wall time {meta['wall_seconds'] / 60:.1f} min.",
                "Every model of a task has the same macro-architecture, depth, width and training budget (AdamW, "
                "cosine schedule); only the token mixer differs. Each run trains on one thread, so its numbers do not "
                "depend on the machine's thread count; costs are measured after training in one process, on one "
                "thread, every mixer in turn, so background load falls on all alike. Accuracy is mean ± sample std "
                "over seeds. A mixer's seeds disagree when their spread exceeds both the gap to the other mixer and "
                f"max({SEED_AGREEMENT_SIGMAS:.0f}·σ_s, {MIN_DISAGREEMENT_POINTS:.0f} points), σ_s = the test set's "
                "sampling error sqrt(p(1-p)/n): that comparison is then inconclusive. Otherwise a difference counts "
                "when |Δ| ≥ 2σ, σ = the larger seed std or σ_s.",
            ],
        )
    )
    return out


KIND_COLOURS = {"local": "tab:red", "temporal": "tab:orange", "contextual": "tab:purple"}
TIMELINE_CAPTION = (
    "The line task, first test video, first seed: each mixer's anomaly score per frame (standardised error of its "
    "prediction, 0 = typical of normal video) with its alarm threshold (dashed: the 0.99 quantile of normal "
    "validation scores); shaded spans are labelled anomalies, coloured by kind (red local, orange temporal, purple "
    "contextual)."
)
STREAM_CAPTION = (
    "The line task, streamed one frame at a time on one thread: the temporal model's state memory (left) and step "
    "latency (right, median of the last 50 steps) after 10², 10³ and 10⁴ frames. The conv keeps its last k-1 "
    "inputs and the SSM a fixed state; causal attention keeps every past key and value, so its memory grows with the "
    "frames seen (the encoder's cost per frame is the same for all and left out)."
)

PLOTS = {
    "Accuracy vs MACs": ("accuracy_vs_macs.png", ACCURACY_CAPTION),
    "Latency vs sequence length": ("latency_vs_sequence_length.png", SWEEP_CAPTION),
    "Line: anomaly score timeline": ("line_timeline.png", TIMELINE_CAPTION),
    "Line: streaming memory and latency": ("line_streaming.png", STREAM_CAPTION),
}


def _line_task(results: dict[str, Any]) -> dict[str, Any] | None:
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
            + f" | {_fmt_int(s.get('params'))} | {_fmt_int(s.get('macs'))} |"
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
        f"For this task 'accuracy' is frame-level AUROC (all test frames, %), per seed in brackets. Contextual "
        f"anomalies need {context} frames of memory (a cycle is {cfg.get('cycle_frames')} frames); the causal conv "
        f"reaches {cfg.get('conv_reach')} frames back: the paper's case for an SSM (long and causal)."
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
        scores = tl["scores"]
        kinds = tl.get("kinds") or ["anomaly" if v else "" for v in tl["labels"]]
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
    return _figure_png(fig)


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
    return _figure_png(fig)


def write_markdown(results: dict[str, Any], path: Path, plots: list[str]) -> None:
    lines = ["# Is the SSM worth it? Study report", ""]
    sections = _sections(results)
    for heading, paragraphs in sections[:1]:
        lines += [f"## {heading}", ""] + [x for p in paragraphs for x in (p, "")]
    lines += ["```", format_table(results), "```", ""]
    for heading, paragraphs in sections[1:]:
        lines += [f"## {heading}", ""]
        for p in paragraphs:
            lines += [p, ""]
    for title in plots:
        file, caption = PLOTS[title]
        lines += [f"![{title}]({file})", "", f"*{title}.* {caption}", ""]
    path.write_text("\n".join(lines))


def _html_inline(p: str) -> str:
    text = html.escape(p)
    while "**" in text:
        text = text.replace("**", "<b>", 1).replace("**", "</b>", 1)
    while "`" in text:
        text = text.replace("`", "<code>", 1).replace("`", "</code>", 1)
    return text


def _html_paragraph(p: str) -> str:
    if p.startswith("```"):
        return f"<pre>{html.escape(p.strip('`').strip())}</pre>"
    if p.startswith("- "):
        return "<ul>" + "".join(f"<li>{_html_inline(item[2:])}</li>" for item in p.splitlines()) + "</ul>"
    return f"<p>{_html_inline(p)}</p>"


def write_html(results: dict[str, Any], path: Path, pngs: dict[str, bytes]) -> None:
    rows = table_rows(results)
    table = "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in TABLE_COLUMNS) + "</tr>"
    for r in rows:
        table += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
    table += "</table>"
    sections = _sections(results)
    body = ["<h1>Is the SSM worth it? Study report</h1>"]
    for i, (heading, paragraphs) in enumerate(sections):
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body += [_html_paragraph(p) for p in paragraphs]
        if i == 0:
            body.append(table)
    for title, png in pngs.items():
        b64 = base64.b64encode(png).decode()
        body.append(
            f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption><b>{html.escape(title)}.</b> {html.escape(PLOTS[title][1])}</figcaption></figure>"
        )
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "pre{background:#f4f4f4;padding:8px;overflow-x:auto}img{max-width:100%}figcaption{font-size:90%}"
    )
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>mambaout study</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )


def write_report(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.md (plots as PNG files next to it) and report.html (plots embedded); returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = {"Accuracy vs MACs": plot_accuracy(results)}
    if results.get("sweep"):
        pngs["Latency vs sequence length"] = plot_sweep_png(results["sweep"])
    line = _line_task(results)
    if line is not None:
        if any(s.get("timeline") for s in line["mixers"].values()):
            pngs["Line: anomaly score timeline"] = timeline_png(line)
        pngs["Line: streaming memory and latency"] = streaming_png(line)
    files = {}
    for title, png in pngs.items():
        file = out_dir / PLOTS[title][0]
        file.write_bytes(png)
        files[title] = file
    write_markdown(results, out_dir / "report.md", list(pngs))
    write_html(results, out_dir / "report.html", pngs)
    return dict(markdown=out_dir / "report.md", html=out_dir / "report.html", **files)
