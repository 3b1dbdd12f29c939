"""`mambaout train`, `mambaout eval`, `mambaout plot`: argument parsing over `mambaout.train`.

Every recipe key is a flag (`--batch-size 128`, `--no-tensorboard`), generated from the `Recipe` dataclass so the
two never disagree; a flag left out keeps the value of the preset or of `--config`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mambaout.engine.config import add_config_flags, config_from_args, dataclass, option
from mambaout.errors import UserError
from mambaout.train.recipe import Recipe

_METAVARS = dict(data="DIR", output="DIR", pretrained="WEIGHTS", auto_augment="POLICY")


@dataclass
class EvalConfig:
    pretrained: str | None = option(None, "weights: .safetensors/.pth path, URL or hf-hub:id")
    model: str | None = option(None, "variant name (default: from config.yaml beside the weights)")
    data: str | None = option(None, "folder with val/<class>/ images, or <class>/ folders itself (default: digits val)")
    batch_size: int = option(64, "images per batch")
    input_size: int | None = option(None, "resolution (default: the run's, else the model's 224)")
    workers: int = option(4, "data loading processes")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    use_ema: bool = option(False, "score the EMA weights of a checkpoint")
    output: str | None = option(None, "also write the results to this JSON file")


@dataclass
class PlotConfig:
    output: str | None = option(None, "image file (default RUN/curves.png)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        allow_abbrev=False,
        help="train a MambaOut (no arguments: the built-in digits, about a minute on a CPU)",
        description="Train with the paper's recipe (or a preset), on one CPU, one GPU or many with torchrun. "
        "With no --data: scikit-learn's digits, mambaout_pico, 32x32.",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    add_config_flags(p, Recipe, metavars=_METAVARS, grouped=True)
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "eval", allow_abbrev=False, help="top-1/top-5 of weights on a validation folder (or the built-in digits)"
    )
    add_config_flags(
        e, EvalConfig, metavars=dict(pretrained="WEIGHTS", data="DIR", output="JSON"), required=("pretrained",)
    )
    e.set_defaults(func=run_eval)

    pl = sub.add_parser("plot", allow_abbrev=False, help="draw a run's curves (loss, accuracy, lr) to RUN/curves.png")
    pl.add_argument("run", metavar="RUN", help="run folder written by mambaout train")
    add_config_flags(pl, PlotConfig, metavars=dict(output="PNG"))
    pl.set_defaults(func=run_plot)


_NOT_RECIPE = {"command", "func", "config", "print_config", "resume"}


def resolve_from_args(args: argparse.Namespace):
    """The recipe the flags ask for (a resumed run starts from its own config.yaml)."""
    from mambaout.train.recipe import resolve_recipe, resume_recipe

    flags = {k: v for k, v in vars(args).items() if k not in _NOT_RECIPE}
    if args.resume:
        if args.config:
            raise UserError("--resume continues a run with its own config.yaml; drop --config (flags still apply)")
        return resume_recipe(args.resume, flags)
    return resolve_recipe(flags, args.config)


def run_train(args: argparse.Namespace) -> int:
    from mambaout.train.trainer import train

    recipe = resolve_from_args(args)
    if args.print_config:
        from mambaout.engine.distributed import resolve_device
        from mambaout.engine.runtime import AMP_NAMES, resolve_amp

        device = resolve_device(recipe.device, int(os.environ.get("LOCAL_RANK", "0")))
        amp = AMP_NAMES.get(resolve_amp(recipe.amp, device), "none")
        print(recipe.to_yaml(int(os.environ.get("WORLD_SIZE", "1")), device=str(device), amp=amp), end="")
        return 0
    result = train(recipe, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0 and result.last:
        minutes, seconds = divmod(int(result.seconds), 60)
        print(
            f"done in {minutes}m{seconds:02d}s: val top-1 {result.last['top1']:.1f}% (best {result.best_top1:.1f}% at "
            f"epoch {result.best_epoch}); results in {result.run_dir}/ (best.safetensors, last.safetensors, "
            f"summary.csv, config.yaml); curves: mambaout plot {result.run_dir}",
            file=sys.stdout,
        )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, EvalConfig)
    if cfg is None:
        return 0
    from mambaout.train.evaluation import evaluate_weights

    result = evaluate_weights(
        cfg.pretrained,
        model=cfg.model,
        data=cfg.data,
        batch_size=cfg.batch_size,
        input_size=cfg.input_size,
        device=cfg.device,
        workers=cfg.workers,
        use_ema=cfg.use_ema,
    )
    print(
        f"{result['model']} on {result['data']}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
        f"({result['images']} images at {result['input_size'][-1]}px, {result['seconds']:.1f}s)"
    )
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {cfg.output}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, PlotConfig)
    if cfg is None:
        return 0
    from mambaout.train.plot import plot_run

    print(f"curves written to {plot_run(args.run, cfg.output)}")
    return 0
