"""`mambaout anomaly generate`: write the built-in labelled conveyor-line video (train, test, labels, meta.json)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anomaly", help="anomaly detection on continuous video: generate the built-in line")
    commands = p.add_subparsers(dest="anomaly_command", metavar="ANOMALY_COMMAND")
    g = commands.add_parser(
        "generate",
        help="write the built-in conveyor line: normal train videos, labelled test videos (no download)",
        description="Items of four kinds travel along a belt in a fixed cycle of --period items, one every --spacing "
        "frames; test videos carry local, temporal and contextual anomalies, every frame labelled with its kind. "
        "Writes DIR/train/*.avi, DIR/test/*.avi, DIR/test_labels/*.csv and DIR/meta.json (see docs/anomaly.md).",
    )
    g.add_argument("--output", default="line_data", help="output folder (default line_data/)")
    g.add_argument("--period", type=int, default=12, help="items per cycle, a multiple of 3 (default 12)")
    g.add_argument("--spacing", type=int, default=16, help="frames between items (default 16)")
    g.add_argument("--frames", type=int, default=1500, help="frames per train video (default 1500)")
    g.add_argument("--test-frames", type=int, default=1000, help="frames per test video (default 1000)")
    g.add_argument("--train-videos", type=int, default=2)
    g.add_argument("--test-videos", type=int, default=3)
    g.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    g.add_argument("--anomaly-fraction", type=float, default=0.10, help="share of abnormal test frames (default 0.1)")
    g.add_argument("--fps", type=float, default=25.0)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=run_generate)
    p.set_defaults(func=lambda args: p.print_help() or 1)


def run_generate(args: argparse.Namespace) -> int:
    from mambaout.anomaly.line import LineConfig, generate_line

    config = LineConfig(
        period=args.period,
        spacing=args.spacing,
        frames=args.frames,
        test_frames=args.test_frames,
        train_videos=args.train_videos,
        test_videos=args.test_videos,
        size=args.size,
        seed=args.seed,
        fps=args.fps,
        anomaly_fraction=args.anomaly_fraction,
    )
    meta = generate_line(args.output, config)
    per_kind = ", ".join(f"{k} {n}" for k, n in meta["abnormal_frames_per_kind"].items())
    print(
        f"wrote {config.train_videos} train and {config.test_videos} test videos of {config.size}x{config.size} "
        f"to {args.output}/ ({100 * meta['abnormal_fraction']:.1f}% abnormal test frames: {per_kind})"
    )
    print(
        f"cycle {meta['cycle_frames']} frames ({config.period} items x {config.spacing}); contextual anomalies need "
        f"{meta['context_frames']} frames of memory"
    )
    return 0
