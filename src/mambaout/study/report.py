"""The study's report: the terminal table, the verdicts, report.md and a self-contained report.html with plots.

Per task the report puts the paper's prediction (the long-sequence test on the tokens the mixers see, and whether
the task is causal: "SSM expected to help" or not) next to what was measured. The SSM is compared with the conv
(the ablation the paper makes: Mamba = Gated CNN + SSM). A difference counts only when |Δ| ≥ 2σ, with σ the
larger of the two mixers' seed standard deviations and the test set's sampling error sqrt(p(1-p)/n); smaller
differences are reported as "within noise". A measurement that goes against the prediction is said to contradict
the paper.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

PAPER_CAUSAL_ATTENTION = "the paper: causal attention cost ViT-Ti 1.6 and ViT-S 0.9 ImageNet top-1 points"


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Mixer summary `a` against `b`: Δ accuracy in points, 2σ noise level, significance, cost ratios."""
    delta = 100 * (a["accuracy_mean"] - b["accuracy_mean"])
    p = (a["accuracy_mean"] + b["accuracy_mean"]) / 2
    sampling = math.sqrt(max(p * (1 - p), 0.0) / a["eval_count"])
    sigma = 100 * max(a["accuracy_std"], b["accuracy_std"], sampling)
    out = dict(delta_points=delta, noise_2sigma=2 * sigma, significant=abs(delta) >= 2 * sigma)
    for key in ("latency_ms_b1", "latency_ms_bN", "macs", "params", "peak_train_mem_mb"):
        if a.get(key) and b.get(key):
            out[f"{key}_ratio"] = a[key] / b[key]
    out["train_seconds_ratio"] = a["train_seconds_mean"] / max(b["train_seconds_mean"], 1e-9)
    return out


def _delta_sentence(name_a: str, name_b: str, c: dict[str, Any]) -> str:
    cost = ""
    if "latency_ms_b1_ratio" in c:
        cost = (
            f" at {c['latency_ms_b1_ratio']:.1f}x the latency (batch 1; {c.get('latency_ms_bN_ratio', 0):.1f}x at "
            f"batch N), {c.get('macs_ratio', 0):.2f}x the MACs and {c['train_seconds_ratio']:.1f}x the training time"
        )
    if not c["significant"]:
        return (
            f"{name_a} vs {name_b}: within noise (Δ = {c['delta_points']:+.1f} points, |Δ| < 2σ = "
            f"{c['noise_2sigma']:.1f}){cost}"
        )
    return f"{name_a} vs {name_b}: {c['delta_points']:+.1f} points (2σ = {c['noise_2sigma']:.1f}){cost}"


def task_verdict(task: dict[str, Any]) -> dict[str, Any]:
    """Prediction vs measurement for one task of results.json (see the module docstring)."""
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
    if "ssm" in mixers and "conv" in mixers:
        c = compare(mixers["ssm"], mixers["conv"])
        verdict["ssm_vs_conv"] = c
        helped = c["significant"] and c["delta_points"] > 0
        if expected:
            agree = "agrees with the paper" if helped else "contradicts the paper's expectation (in this budget)"
        else:
            agree = "contradicts the paper" if helped else "agrees with the paper (Hypothesis 1)"
        verdict["agreement"] = agree
        lines.append(f"{_delta_sentence('ssm', 'conv', c)}: {agree}.")
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
            lines.append(_delta_sentence(a, b, c) + note + ".")
    verdict["measured"] = lines or ["one mixer only: nothing to compare"]
    return verdict


def _fmt_int(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


TABLE_COLUMNS = ("task", "mixer", "accuracy %", "params", "MACs", "train s", "ms b1", "ms bN", "train MB")


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for task_name, task in results["tasks"].items():
        for mixer, s in task["mixers"].items():
            rows.append(
                [
                    task_name,
                    mixer,
                    f"{100 * s['accuracy_mean']:.1f} ± {100 * s['accuracy_std']:.1f}",
                    _fmt_int(s.get("params")),
                    _fmt_int(s.get("macs")),
                    f"{s['train_seconds_mean']:.0f}",
                    f"{s['latency_ms_b1']:.1f}" if "latency_ms_b1" in s else "-",
                    f"{s['latency_ms_bN']:.1f}" if "latency_ms_bN" in s else "-",
                    f"{s['peak_train_mem_mb']:.0f}" if "peak_train_mem_mb" in s else "-",
                ]
            )
    return rows


def format_table(results: dict[str, Any]) -> str:
    """The terminal table: one row per (task, mixer), accuracy as mean ± std over seeds."""
    rows = [list(TABLE_COLUMNS)] + table_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    meta = results["meta"]
    lines.append(
        f"{len(meta['seeds'])} seeds ({', '.join(map(str, meta['seeds']))}), budget {meta['budget']!r}, "
        f"{meta['environment']['device']}, {meta['environment']['threads']} threads, "
        f"wall time {meta['wall_seconds'] / 60:.1f} min. ms bN = latency at the training batch size "
        "(digits 64, copying 32); train MB = peak activation memory of one training step."
    )
    return "\n".join(lines)


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def plot_accuracy_vs_macs(results: dict[str, Any]) -> bytes:
    """One panel per task: accuracy (mean ± std over seeds) against MACs per sample, a point per mixer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, (name, task) in zip(axes[0], tasks.items()):
        for i, (mixer, s) in enumerate(task["mixers"].items()):
            if s.get("macs"):
                ax.errorbar(
                    s["macs"] / 1e6,
                    100 * s["accuracy_mean"],
                    yerr=100 * s["accuracy_std"],
                    fmt="o",
                    capsize=3,
                    label=mixer,
                )
                ax.annotate(
                    mixer,
                    (s["macs"] / 1e6, 100 * s["accuracy_mean"]),
                    textcoords="offset points",
                    xytext=(5, 4 if i % 2 == 0 else -12),  # alternate, so equal points stay readable
                    fontsize=8,
                )
        ax.set_xlabel("MACs per sample (M)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = _figure_png(fig)
    plt.close(fig)
    return png


def plot_sweep_png(sweep: dict[str, Any]) -> bytes:
    from mambaout.study.sweep import plot_sweep

    buf = io.BytesIO()
    plot_sweep(sweep, buf)
    return buf.getvalue()


def _sections(results: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Report content as (heading, paragraphs), shared by the Markdown and HTML writers."""
    meta = results["meta"]
    env = meta["environment"]
    out = [
        (
            "Setup",
            [
                f"Command: `{meta['command']}`. Budget {meta['budget']!r}, seeds {meta['seeds']}, {env['device']}, "
                f"{env['threads']} threads, torch {env['torch']}; wall time {meta['wall_seconds'] / 60:.1f} min.",
                "Every model of a task has the same macro-architecture, depth, width and training budget (AdamW, "
                "cosine schedule); only the token mixer differs. Accuracy is mean ± sample std over seeds. "
                "A difference counts when |Δ| ≥ 2σ, σ = the larger seed std or the test set's sampling error "
                "sqrt(p(1-p)/n).",
            ],
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
                    f"Setup: {desc}; {task['budget']['steps']} steps of batch {task['budget']['batch_size']}.",
                    f"**Paper's prediction:** {v['prediction']}",
                    "**Measured:**",
                    "\n".join(f"- {line}" for line in v["measured"]),
                ],
            )
        )
    if results.get("sweep"):
        from mambaout.study.sweep import format_sweep

        out.append(("Latency vs sequence length", [f"```\n{format_sweep(results['sweep'])}\n```"]))
    return out


def write_markdown(results: dict[str, Any], path: Path, plots: dict[str, str]) -> None:
    lines = ["# Is the SSM worth it? Study report", ""]
    lines += ["```", format_table(results), "```", ""]
    for heading, paragraphs in _sections(results):
        lines += [f"## {heading}", ""]
        for p in paragraphs:
            lines += [p, ""]
    for title, file in plots.items():
        lines += [f"![{title}]({file})", ""]
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
    body = ["<h1>Is the SSM worth it? Study report</h1>", table]
    for heading, paragraphs in _sections(results):
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body += [_html_paragraph(p) for p in paragraphs]
    for title, png in pngs.items():
        b64 = base64.b64encode(png).decode()
        body.append(f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,{b64}'>")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "pre{background:#f4f4f4;padding:8px;overflow-x:auto}img{max-width:100%}"
    )
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>mambaout study</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )


def write_report(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.md (plots as PNG files next to it) and report.html (plots embedded); returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = {"Accuracy vs MACs": plot_accuracy_vs_macs(results)}
    if results.get("sweep"):
        pngs["Latency vs sequence length"] = plot_sweep_png(results["sweep"])
    files = {}
    for title, png in pngs.items():
        file = out_dir / (title.lower().replace(" ", "_") + ".png")
        file.write_bytes(png)
        files[title] = file
    write_markdown(results, out_dir / "report.md", {t: f.name for t, f in files.items()})
    write_html(results, out_dir / "report.html", pngs)
    return dict(markdown=out_dir / "report.md", html=out_dir / "report.html", **files)
