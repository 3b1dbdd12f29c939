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

from mambaout.engine.config import add_config_flags, config_from_args, dataclass, option
from mambaout.errors import UserError

BUDGETS = ("small", "default", "full")  # training steps per run, per task (see docs/study.md)
STUDY_MINUTES = 10  # the default study's wall time on 2 busy CPU cores, as the README states (measured 5.0 min)


@dataclass
class StudyConfig:
    tasks: str | None = option(
        None,
        "comma-separated: digits, selective_copying, line, images (default: the first three; with --data: line for a "
        "video dataset, images for class folders)",
    )
    data: str | None = option(
        None,
        "your data: video (DIR/train, DIR/test, DIR/test_labels; UCSD Ped2, Avenue, ShanghaiTech layouts) for the line "
        "task, or images (DIR/train + DIR/val, or DIR/<class>/*, split 80/20)",
    )
    mixers: str | None = option(None, "comma-separated subset of conv, ssm, attn, attn_causal (default: per task)")
    seeds: int | None = option(None, "how many seeds, at least 1 (default 2; 3 with --full)")
    budget: str = option(
        "default", "training steps per run (see docs/study.md): small is a smoke test", choices=BUDGETS
    )
    full: bool = option(False, "same as --budget full --seeds 3")
    model: str = option("mambaout_pico", "MambaOut variant for the image tasks")
    image_size: int | None = option(None, "input side for image tasks (default 32 digits, 64 --data)")
    scan: str | None = option(None, "scan order of the SSM on images", choices=("cross", "bidi", "causal"))
    output: str = option("study_out", "output folder")
    device: str = option("cpu", "cpu or cuda")
    workers: int | None = option(
        None, "runs trained side by side, in processes of one thread each (default: the free CPU cores; 1 on a GPU)"
    )
    sweep: bool = option(True, "the latency-vs-length sweep (--no-sweep skips it)")


@dataclass
class AnalyzeConfig:
    image_size: tuple[int, int] | None = option(None, "an image task of H x W pixels")
    patch_size: int = option(16, "patch size (tokens = H/P x W/P)")
    seq_len: int | None = option(None, "a sequence task of L tokens")
    dim: int | None = option(None, "model width")
    model: str | None = option(None, "a MambaOut variant: one row per stage (its tokens and width)")
    causal: bool = option(False, "the task must mix tokens causally")
    json: bool = option(False, "print JSON instead of the table")
    measure: bool = option(
        False, "time one block per mixer over a sweep of L on this machine and plot it (about a minute)"
    )
    seq_lens: tuple[int, ...] | None = option(None, "lengths for --measure (default 6D x 1/8..2)")
    output: str = option("study_out", "where --measure writes sweep.json and its plot")
    threads: int = option(1, "torch CPU threads for --measure")


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
    add_config_flags(p, StudyConfig, metavars=dict(data="DIR", output="DIR", model="NAME"))
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
    add_config_flags(
        a, AnalyzeConfig, metavars=dict(image_size=("H", "W"), seq_len="L", dim="D", seq_lens="L", output="DIR")
    )
    a.set_defaults(func=run_analyze_command)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _check_positive(**values: int | tuple[int, ...] | None) -> None:
    """UserError for the first flag given a value below 1 (None: not given)."""
    for flag, value in values.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and v < 1:
                name = "--" + flag.replace("_", "-")
                raise UserError(f"{name} must be a positive whole number, got {v}; give {name} 1 or more")


def _note(command: str, text: str | None) -> None:
    if text:
        print(f"mambaout {command}: note: {text}", file=sys.stderr)


def run_study_command(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, StudyConfig)
    if cfg is None:
        return 0
    _check_positive(seeds=cfg.seeds, workers=cfg.workers, image_size=cfg.image_size)
    import torch

    from mambaout.study.runner import build_tasks, run_study

    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {cfg.device} asked for a GPU but torch sees none; use --device cpu")
    budget = "full" if cfg.full else cfg.budget
    seeds = cfg.seeds or (3 if cfg.full else 2)
    mixers = _split(cfg.mixers)
    tasks = build_tasks(
        _split(cfg.tasks),
        data=cfg.data,
        model=cfg.model,
        image_size=cfg.image_size,
        scan=cfg.scan,
        budget=budget,
        work_dir=cfg.output,
    )
    results = run_study(
        tasks,
        seeds=list(range(seeds)),
        budget=budget,
        mixers=mixers,
        output=cfg.output,
        device=cfg.device,
        sweep=cfg.sweep,
        command="mambaout " + shlex.join(sys.argv[1:]),
        workers=cfg.workers,
    )
    print(f"report: {Path(cfg.output) / 'report.html'} (and report.md, results.json)")
    for name, task in results["tasks"].items():
        print(f"{name}: {task['verdict']['bottom_line']}")
    return 0


def run_analyze_command(args: argparse.Namespace) -> int:
    preset = args.preset
    cfg = config_from_args(args, AnalyzeConfig)
    if cfg is None:
        return 0
    _check_positive(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        seq_len=cfg.seq_len,
        dim=cfg.dim,
        threads=cfg.threads,
        seq_lens=cfg.seq_lens,
    )
    from mambaout.study.analyze import analyze, format_analysis

    result = analyze(
        seq_len=cfg.seq_len,
        preset=preset,
        image_size=tuple(cfg.image_size) if cfg.image_size else None,
        patch_size=cfg.patch_size,
        dim=cfg.dim,
        model=cfg.model,
        causal=cfg.causal,
    )
    if cfg.measure:
        import numba
        import torch

        from mambaout.study.schedule import busy_warning
        from mambaout.study.sweep import format_sweep, latency_sweep, plot_sweep

        torch.set_num_threads(cfg.threads)  # the SSM's numba kernels get the same count
        numba.set_num_threads(min(cfg.threads, numba.config.NUMBA_NUM_THREADS))
        _note("analyze", busy_warning(cfg.threads))
        dim = result["rows"][result["headline"]]["dim"]
        sweep = latency_sweep(dim=dim, seq_lens=cfg.seq_lens, causal=cfg.causal)
        out = Path(cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(sweep, indent=2))
        plot_sweep(sweep, out / "latency_vs_length.png")
        result["measured"] = sweep
    if cfg.json:
        print(json.dumps(result, indent=2))
        return 0
    print(format_analysis(result))
    if cfg.measure:
        print(format_sweep(result["measured"]))
        print(f"plot: {Path(cfg.output) / 'latency_vs_length.png'}")
    return 0
