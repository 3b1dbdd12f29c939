"""`mambaout study` (train matched models that differ only in the token mixer, report) and `mambaout analyze`
(the paper's long-sequence test for a task, optionally timed on this machine).

Only the standard library is imported here: torch, numba and the rest load inside the command functions, so
`mambaout study --help` answers at once. Flags must be spelled out (no prefix matching: `--seed` is not `--seeds`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from mambaout.errors import UserError

STUDY_MINUTES = 10  # the default study's wall time on 2 busy CPU cores, as the README states (measured 5.0 min)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        allow_abbrev=False,
        help="is the SSM worth it? train matched models (conv / ssm / attention mixers) and write a report",
        description="Train models that differ only in the token mixer on built-in tasks (scikit-learn digits: short, "
        "fully visible; selective copying: causal, remote context; the conveyor line: anomaly detection on "
        "continuous video, long and causal) or your images or video, with several seeds; report "
        "accuracy, parameters, MACs, training time, latency and memory next to the paper's prediction. "
        f"With no arguments it takes at most about {STUDY_MINUTES} minutes on 2 CPU cores.",
    )
    p.add_argument(
        "--tasks",
        help="comma-separated: digits, selective_copying, line, images (default: the first three; with --data: line "
        "for a video dataset, images for class folders)",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="your data: video (DIR/train, DIR/test, DIR/test_labels; UCSD Ped2, Avenue, ShanghaiTech layouts) for "
        "the line task, or images (DIR/train + DIR/val, or DIR/<class>/*, split 80/20)",
    )
    p.add_argument("--mixers", help="comma-separated subset of conv, ssm, attn, attn_causal (default: per task)")
    p.add_argument("--seeds", type=int, default=None, help="how many seeds, at least 1 (default 2; 3 with --full)")
    p.add_argument(
        "--budget",
        choices=("small", "default", "full"),
        default="default",
        help="training steps per run (see docs/study.md): small is a smoke test",
    )
    p.add_argument("--full", action="store_true", help="same as --budget full --seeds 3")
    p.add_argument("--model", default="mambaout_pico", help="MambaOut variant for the image tasks")
    p.add_argument("--image-size", type=int, help="input side for image tasks (default 32 digits, 64 --data)")
    p.add_argument("--scan", choices=("cross", "bidi", "causal"), help="scan order of the SSM on images")
    p.add_argument("--output", default="study_out", help="output folder (default study_out/)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--workers",
        type=int,
        help="runs trained side by side, in processes of one thread each (default: the free CPU cores; 1 on a GPU)",
    )
    p.add_argument("--no-sweep", action="store_true", help="skip the latency-vs-length sweep")
    p.set_defaults(func=run_study_command)

    a = sub.add_parser(
        "analyze",
        allow_abbrev=False,
        help="the paper's long-sequence test: is a task long (L > 6D) or causal enough for an SSM?",
        description="Print L, 6D, r_L = L/6D, the attention FLOPs split (24·D²·L vs 4·D·L², half for causal) and "
        "the paper's verdicts. Without a width, the paper's ViT-S (384) and ViT-B (768) rows.",
    )
    a.add_argument(
        "preset",
        nargs="?",
        choices=("imagenet", "coco", "ade20k"),
        help="imagenet 224x224, coco 800x1280, ade20k 512x2048 (16x16 patches)",
    )
    a.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="an image task of H x W pixels")
    a.add_argument("--patch-size", type=int, default=16, help="patch size (tokens = H/P x W/P), default 16")
    a.add_argument("--seq-len", type=int, metavar="L", help="a sequence task of L tokens")
    a.add_argument("--dim", type=int, metavar="D", help="model width")
    a.add_argument("--model", help="a MambaOut variant: one row per stage (its tokens and width)")
    a.add_argument("--causal", action="store_true", help="the task must mix tokens causally")
    a.add_argument("--json", action="store_true", help="print JSON instead of the table")
    a.add_argument(
        "--measure",
        action="store_true",
        help="time one block per mixer over a sweep of L on this machine and plot it (about a minute)",
    )
    a.add_argument("--seq-lens", type=int, nargs="+", metavar="L", help="lengths for --measure (default 6D x 1/8..2)")
    a.add_argument("--output", default="study_out", help="where --measure writes sweep.json and its plot")
    a.add_argument("--threads", type=int, default=1, help="torch CPU threads for --measure (default 1)")
    a.set_defaults(func=run_analyze_command)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _check_positive(**values: int | list[int] | None) -> None:
    """UserError for the first flag given a value below 1 (None: not given)."""
    for flag, value in values.items():
        for v in value if isinstance(value, list) else [value]:
            if v is not None and v < 1:
                name = "--" + flag.replace("_", "-")
                raise UserError(f"{name} must be a positive whole number, got {v}; give {name} 1 or more")


def _note(command: str, text: str | None) -> None:
    if text:
        print(f"mambaout {command}: note: {text}", file=sys.stderr)


def run_study_command(args: argparse.Namespace) -> int:
    _check_positive(seeds=args.seeds, workers=args.workers, image_size=args.image_size)
    import torch

    from mambaout.study.runner import build_tasks, run_study

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device} asked for a GPU but torch sees none; use --device cpu")
    budget = "full" if args.full else args.budget
    seeds = args.seeds or (3 if args.full else 2)
    tasks = build_tasks(
        _split(args.tasks),
        data=args.data,
        model=args.model,
        image_size=args.image_size,
        scan=args.scan,
        budget=budget,
        work_dir=args.output,
    )
    results = run_study(
        tasks,
        seeds=list(range(seeds)),
        budget=budget,
        mixers=_split(args.mixers),
        output=args.output,
        device=args.device,
        sweep=not args.no_sweep,
        command="mambaout " + shlex.join(sys.argv[1:]),
        workers=args.workers,
    )
    print(f"report: {Path(args.output) / 'report.html'} (and report.md, results.json)")
    for name, task in results["tasks"].items():
        print(f"{name}: {task['verdict']['bottom_line']}")
    return 0


def run_analyze_command(args: argparse.Namespace) -> int:
    _check_positive(
        image_size=args.image_size,
        patch_size=args.patch_size,
        seq_len=args.seq_len,
        dim=args.dim,
        threads=args.threads,
        seq_lens=args.seq_lens,
    )
    from mambaout.study.analyze import analyze, format_analysis

    result = analyze(
        seq_len=args.seq_len,
        preset=args.preset,
        image_size=tuple(args.image_size) if args.image_size else None,
        patch_size=args.patch_size,
        dim=args.dim,
        model=args.model,
        causal=args.causal,
    )
    if args.measure:
        import numba
        import torch

        from mambaout.study.schedule import busy_warning
        from mambaout.study.sweep import format_sweep, latency_sweep, plot_sweep

        torch.set_num_threads(args.threads)  # the SSM's numba kernels get the same count
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        _note("analyze", busy_warning(args.threads))
        dim = result["rows"][result["headline"]]["dim"]
        sweep = latency_sweep(dim=dim, seq_lens=args.seq_lens, causal=args.causal)
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(sweep, indent=2))
        plot_sweep(sweep, out / "latency_vs_length.png")
        result["measured"] = sweep
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(format_analysis(result))
    if args.measure:
        print(format_sweep(result["measured"]))
        print(f"plot: {Path(args.output) / 'latency_vs_length.png'}")
    return 0
