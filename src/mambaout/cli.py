"""The `mambaout` command: a thin dispatcher over the library.

Each capability owns its subcommands in its own `cli.py` with a `register(subparsers)` function; this file only
collects them, runs the chosen one, and turns a `UserError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from mambaout.errors import UserError

# In the order `mambaout --help` lists them. A capability whose package is absent is simply not offered.
COMMAND_MODULES = (
    "mambaout.study.cli",  # study, analyze
    "mambaout.train.cli",  # train, eval, plot
    "mambaout.models.cli",  # models
    "mambaout.bench.cli",  # bench
    "mambaout.infer.cli",  # predict
    "mambaout.dense.cli",  # detect, segment
    "mambaout.export.cli",  # export
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mambaout", description="MambaOut backbones and the 'is the SSM worth it?' study."
    )
    from mambaout import __version__

    parser.add_argument("--version", action="version", version=f"mambaout {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        if importlib.util.find_spec(module_name.rsplit(".", 1)[0]) is None:
            continue
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
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
