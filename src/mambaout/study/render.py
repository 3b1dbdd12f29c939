"""The study's report as text: the terminal table, report.md, and report.html made from the same Markdown.

report.md keeps its figures as PNG files next to it; report.html is self-contained (the figures embedded) and is
the Markdown rendered by the `markdown` package (tables, fenced code), so every table of report.md is a table of
report.html.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from mambaout.engine.records import format_count, plural
from mambaout.study.figures import ACCURACY_CAPTION, SWEEP_CAPTION, plot_accuracy, plot_sweep_png
from mambaout.study.line_section import (
    STREAM_CAPTION,
    TIMELINE_CAPTION,
    line_paragraphs,
    line_task,
    streaming_png,
    timeline_png,
)
from mambaout.study.stats import MIN_DISAGREEMENT_POINTS, SEED_AGREEMENT_SIGMAS

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
                    format_count(s.get("params")),
                    format_count(s.get("macs")),
                    f"{s['train_seconds_mean']:.0f}",
                    f"{s['latency_ms_b1']:.1f}" if "latency_ms_b1" in s else "-",
                    f"{s['latency_ms_bN']:.1f}" if "latency_ms_bN" in s else "-",
                    f"{s['peak_train_mem_mb']:.0f}" if "peak_train_mem_mb" in s else "-",
                ]
            )
    return rows


def setup_budget(task: dict[str, Any]) -> str:
    """ "1200 steps of batch 64" or, with the stop rule, "up to 1200 steps of batch 64, a run ending once its
    training loss averages 0.01 over 50 steps (steps run per seed: conv 1200 / 1200; ssm 591 / 1200)" """
    budget = task["budget"]
    text = f"{budget['steps']} steps of batch {budget['batch_size']}"
    if budget.get("stop_loss") is None:
        return text
    steps = {m: s.get("steps_per_seed") for m, s in task["mixers"].items() if s.get("steps_per_seed")}
    done = "; ".join(f"{m} {' / '.join(str(n) for n in ns)}" for m, ns in steps.items())
    return (
        f"up to {text}, a run ending once its training loss averages {budget['stop_loss']:g} over "
        f"{budget['stop_window']} steps" + (f" (steps run per seed: {done})" if done else "")
    )


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
    return "\n".join([*lines, setup_line(results["meta"])])


def setup_line(meta: dict[str, Any]) -> str:
    """The line under the table: seeds, budget, machine and load, wall time, and what two columns mean."""
    return (
        f"{plural(len(meta['seeds']), 'seed')} ({', '.join(map(str, meta['seeds']))}), budget {meta['budget']!r}, "
        f"{environment_line(meta)}; wall time {meta['wall_seconds'] / 60:.1f} min. ms bN = latency at the training "
        "batch size; train MB = peak activation memory of one training step."
    )


def sections(results: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Report content as (heading, Markdown paragraphs); bottom lines first."""
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
                    f"Setup: {desc}; {setup_budget(task)}.",
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


PLOTS = {
    "Accuracy vs MACs": ("accuracy_vs_macs.png", ACCURACY_CAPTION),
    "Latency vs sequence length": ("latency_vs_sequence_length.png", SWEEP_CAPTION),
    "Line: anomaly score timeline": ("line_timeline.png", TIMELINE_CAPTION),
    "Line: streaming memory and latency": ("line_streaming.png", STREAM_CAPTION),
}


def markdown_table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    """A Markdown table; '|' inside a cell is escaped."""
    cells = [[c.replace("|", "\\|") for c in r] for r in (list(header), *rows)]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    lines.insert(1, "|" + "---|" * len(header))
    return "\n".join(lines)


def report_markdown(results: dict[str, Any], images: dict[str, str]) -> str:
    """The whole report as Markdown; `images` maps each figure's title to its address (a file or a data URL)."""
    parts = ["# Is the SSM worth it? Study report"]
    content = sections(results)
    for i, (heading, paragraphs) in enumerate(content):
        parts += [f"## {heading}", *paragraphs]
        if i == 0:
            parts.append(markdown_table(TABLE_COLUMNS, table_rows(results)))
            parts.append(setup_line(results["meta"]))
    for title, address in images.items():
        parts += [f"![{title}]({address})", f"*{title}.* {PLOTS[title][1]}"]
    return "\n\n".join(parts) + "\n"


def report_html(markdown_text: str) -> str:
    """A self-contained HTML page of the report's Markdown."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"], output_format="html")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "pre{background:#f4f4f4;padding:8px;overflow-x:auto}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape('mambaout study')}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>"
    )


def write_report(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.md (plots as PNG files next to it) and report.html (plots embedded); returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = {"Accuracy vs MACs": plot_accuracy(results)}
    if results.get("sweep"):
        pngs["Latency vs sequence length"] = plot_sweep_png(results["sweep"])
    line = line_task(results)
    if line is not None:
        if any(s.get("timeline") for s in line["mixers"].values()):
            pngs["Line: anomaly score timeline"] = timeline_png(line)
        pngs["Line: streaming memory and latency"] = streaming_png(line)
    files = {}
    for title, png in pngs.items():
        file = out_dir / PLOTS[title][0]
        file.write_bytes(png)
        files[title] = file
    (out_dir / "report.md").write_text(report_markdown(results, {t: f.name for t, f in files.items()}))
    embedded = {t: "data:image/png;base64," + base64.b64encode(png).decode() for t, png in pngs.items()}
    (out_dir / "report.html").write_text(report_html(report_markdown(results, embedded)))
    return dict(markdown=out_dir / "report.md", html=out_dir / "report.html", **files)
