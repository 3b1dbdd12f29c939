"""`mambaout anomaly generate`: write the built-in labelled conveyor-line video (train, test, labels, meta.json).
`mambaout anomaly train` / `eval`: a detector on normal video (flags generated from `AnomalyConfig`) and its metrics.
(`mambaout watch` is `mambaout.monitor.cli`.)
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from mambaout.anomaly.line import LineConfig
    from mambaout.engine.config import add_config_flags

    p = sub.add_parser("anomaly", help="anomaly detection on continuous video: generate the built-in line")
    commands = p.add_subparsers(dest="anomaly_command", metavar="ANOMALY_COMMAND")
    g = commands.add_parser(
        "generate",
        help="write the built-in conveyor line: normal train videos, labelled test videos (no download)",
        description="Items of four kinds travel along a belt in a fixed cycle of --period items, one every --spacing "
        "frames; test videos carry local, temporal and contextual anomalies, every frame labelled with its kind. "
        "Writes DIR/train/*.avi, DIR/test/*.avi, DIR/test_labels/*.csv and DIR/meta.json (see docs/anomaly.md).",
    )
    g.add_argument("--output", default="line_data", help="output folder [line_data]")
    add_config_flags(g, LineConfig)
    g.set_defaults(func=run_generate)

    from mambaout.anomaly.config import AnomalyConfig

    t = commands.add_parser(
        "train",
        help="train a detector on the normal videos of --data (encoder, temporal model, calibration)",
        allow_abbrev=False,
    )
    add_config_flags(t, AnomalyConfig, metavars=dict(data="DIR", output="RUN", encoder="RUN"), grouped=True)
    t.set_defaults(func=run_train)

    e = commands.add_parser("eval", help="frame AUROC (micro, macro, per kind), AP, delay, false alarms/hour")
    e.add_argument("--run", required=True, help="run folder of `mambaout anomaly train`")
    e.add_argument("--data", required=True, help="dataset root with test videos and labels")
    e.add_argument("--smooth", type=float, default=0.0, help="Gaussian smoothing sigma in frames (0: raw scores)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=run_eval)
    p.set_defaults(func=lambda args: p.print_help() or 1)


def run_generate(args: argparse.Namespace) -> int:
    from mambaout.anomaly.line import LineConfig, generate_line
    from mambaout.engine.config import flags_of, resolve_config, to_yaml

    config = resolve_config(LineConfig, flags_of(args, LineConfig), args.config)
    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    meta = generate_line(args.output, config)
    per_kind = ", ".join(f"{k} {n}" for k, n in meta["abnormal_frames_per_kind"].items())
    events = ", ".join(f"{s} {n}" for s, n in meta["events_per_subtype"].items())
    passes = ", ".join(f"{k} {n}" for k, n in meta["train_passes"].items())
    print(
        f"wrote {config.train_videos} train and {config.test_videos} test videos of {config.size}x{config.size} "
        f"to {args.output}/ ({100 * meta['abnormal_fraction']:.1f}% abnormal test frames: {per_kind})"
    )
    print(f"events: {events}; items passing in the train videos: {passes}")
    print(
        f"cycle {meta['cycle_frames']} frames ({config.period} items x {config.spacing}); contextual anomalies need "
        f"{meta['context_frames']} frames of memory"
    )
    return 0


def run_train(args: argparse.Namespace) -> int:
    from mambaout.anomaly.config import AnomalyConfig
    from mambaout.engine.config import flags_of, resolve_config, to_yaml

    cfg = resolve_config(AnomalyConfig, flags_of(args, AnomalyConfig), args.config)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from mambaout.anomaly.train import train_detector

    result = train_detector(cfg)
    c = result["calibration"]
    patch = f", patch bank {c['patch']['bank']}" if c.get("patch") else ", no patch branch"
    print(
        f"{cfg.mixer}: {c['params']:,} temporal parameters{patch}, alarm threshold {c['alarm']['alarm_threshold']:.3f} "
        f"(the {c['quantile']} quantile of {c['validation_frames']} normal validation frames), "
        f"trained in {c['train_seconds']:.0f} s -> {result['run']}"
    )
    return 0


def format_metrics(m: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    kinds = "  ".join(f"{k} {pct(v)}" for k, v in m.get("auroc_per_kind", {}).items())
    d = m["detection"]
    delay = "-" if d["mean_delay_frames"] is None else f"{d['mean_delay_frames']:.1f}"
    lines = [
        f"{m['mixer']}: frame AUROC micro {pct(m['auroc_micro'])}  macro {pct(m['auroc_macro'])}  "
        f"AP {pct(m['average_precision'])}" + (f"  smoothed sigma {m['smooth_sigma']}" if m["smooth_sigma"] else ""),
    ]
    if kinds:
        lines.append(f"AUROC per kind: {kinds}")
    for name, b in m.get("branches", {}).items():
        per = "  ".join(f"{k} {pct(v)}" for k, v in b.get("auroc_per_kind", {}).items())
        lines.append(f"  {name:<9} AUROC micro {pct(b['auroc_micro'])}" + (f"  per kind: {per}" if per else ""))
    if "pixels" in m:
        p = m["pixels"]
        lines.append(
            f"pixels ({p['frames']} frames): pixel AUROC {pct(p['pixel_auroc'])}  AUPRO {pct(p['aupro'])}  map maximum "
            f"on the defect in {pct(p['map_max_on_defect'])} % of {p['defect_frames']} defect frames"
        )
    for kind, p in m.get("pixels_per_kind", {}).items():
        lines.append(
            f"  {kind:<10} pixel AUROC {pct(p['pixel_auroc'])}  AUPRO {pct(p['aupro'])}  maximum on it "
            f"{pct(p['map_max_on_defect'])} %"
        )
    lines.append(
        f"threshold {m['threshold']:.3f}: {d['detected']}/{d['intervals']} anomalies detected, mean delay {delay} "
        f"frames, {m['false_alarms_per_hour']:.0f} false alarms per hour of normal video"
    )
    return "\n".join(lines)


def run_eval(args: argparse.Namespace) -> int:
    from mambaout.anomaly.evaluate import evaluate_run

    metrics = evaluate_run(args.run, args.data, smooth=args.smooth)
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))
    return 0
