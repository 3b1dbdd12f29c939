"""The `mambaout` command: a thin dispatcher over the library.

Each capability owns its subcommands in its own `cli.py` with a `register(subparsers)` function; this file only
knows which module registers which command, imports just that one (so `mambaout --help` and `mambaout X --help`
answer without loading torch for the others), runs it, and turns a `UserError` into one line on stderr and exit
status 2. Flags are never abbreviated: `--seed` is not taken to mean `--seeds`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mambaout.engine.allocator import keep_freed_memory
from mambaout.errors import UserError

# command -> (module that registers it, its line in `mambaout --help`), in the order the help lists them.
# A capability whose module is absent is simply not offered.
COMMANDS = {
    "study": ("mambaout.study.cli", "is the SSM worth it? train matched models (conv / ssm / attention) and report"),
    "analyze": ("mambaout.study.cli", "the paper's long-sequence test: is a task long (L > 6D) or causal enough?"),
    "anomaly": ("mambaout.anomaly.cli", "anomaly detection on line video: generate data, train, evaluate"),
    "watch": ("mambaout.monitor.cli", "score a video or camera stream frame by frame with a trained detector"),
    "train": ("mambaout.train.cli", "train a MambaOut (no arguments: the built-in digits, about a minute on a CPU)"),
    "eval": ("mambaout.train.cli", "top-1/top-5 of weights on a validation folder (or the built-in digits)"),
    "plot": ("mambaout.train.cli", "draw a run's curves (loss, accuracy, lr) to RUN/curves.png"),
    "models": ("mambaout.models.cli", "list the variants: params, GMACs@224 (counted) and the paper's numbers"),
    "bench": ("mambaout.bench.cli", "measure params, GMACs, img/s, latency and peak memory (optionally vs timm)"),
    "predict": ("mambaout.infer.cli", "classify images: top-5 with ImageNet names (or your class names)"),
    "export": ("mambaout.export.cli", "export a model to ONNX or OpenVINO, verified against PyTorch"),
    "detect": ("mambaout.dense.cli", "Mask R-CNN + FPN with a MambaOut backbone on COCO-format data"),
    "segment": ("mambaout.dense.cli", "UperNet with a MambaOut backbone on ADE20K"),
}


class Parser(argparse.ArgumentParser):
    """argparse without prefix matching, for this parser and every subparser made from it."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def _available(module: str) -> bool:
    """Whether the module's file is installed (checked on disk: finding a spec would import its package)."""
    from pathlib import Path

    import mambaout

    return Path(mambaout.__file__).parent.joinpath(*module.split(".")[1:]).with_suffix(".py").is_file()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: only the chosen command's module is imported (every module when `argv` is None)."""
    parser = Parser(prog="mambaout", description="MambaOut backbones and the 'is the SSM worth it?' study.")
    from mambaout import __version__

    parser.add_argument("--version", action="version", version=f"mambaout {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    if argv is not None and chosen not in COMMANDS:  # the help listing (or an unknown command): no imports
        for name, (module, help_line) in COMMANDS.items():
            if _available(module):
                sub.add_parser(name, help=help_line, add_help=False)
        return parser
    modules = [COMMANDS[chosen][0]] if chosen else list(dict.fromkeys(m for m, _ in COMMANDS.values()))
    for module in modules:
        if _available(module):
            importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    keep_freed_memory()  # a step's activations stay mapped for the next step (engine/allocator.py)
    try:
        result = args.func(args)
    except UserError as e:
        print(f"mambaout {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mambaout {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
