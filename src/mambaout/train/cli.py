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

from mambaout.engine.config import add_config_flags
from mambaout.errors import UserError
from mambaout.train.recipe import Recipe

_METAVARS = dict(data="DIR", output="DIR", pretrained="WEIGHTS", auto_augment="POLICY")


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
    e.add_argument("--pretrained", required=True, help="weights: .safetensors/.pth path, URL or hf-hub:id")
    e.add_argument("--model", help="variant name (default: from config.yaml beside the weights)")
    e.add_argument("--data", help="folder with val/<class>/ images, or <class>/ folders itself (default: digits val)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--input-size", type=int, help="resolution (default: the run's, else the model's 224)")
    e.add_argument("--workers", type=int, default=4)
    e.add_argument("--device", default="auto")
    e.add_argument("--use-ema", action="store_true", help="score the EMA weights of a checkpoint")
    e.add_argument("--output", metavar="JSON", help="also write the results to this JSON file")
    e.set_defaults(func=run_eval)

    pl = sub.add_parser("plot", allow_abbrev=False, help="draw a run's curves (loss, accuracy, lr) to RUN/curves.png")
    pl.add_argument("run", metavar="RUN", help="run folder written by mambaout train")
    pl.add_argument("--output", help="image file (default RUN/curves.png)")
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
    from mambaout.train.evaluation import evaluate_weights

    result = evaluate_weights(
        args.pretrained,
        model=args.model,
        data=args.data,
        batch_size=args.batch_size,
        input_size=args.input_size,
        device=args.device,
        workers=args.workers,
        use_ema=args.use_ema,
    )
    print(
        f"{result['model']} on {result['data']}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
        f"({result['images']} images at {result['input_size'][-1]}px, {result['seconds']:.1f}s)"
    )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.output}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from mambaout.train.plot import plot_run

    print(f"curves written to {plot_run(args.run, args.output)}")
    return 0
