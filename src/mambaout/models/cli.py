"""`mambaout models`: the variant table with parameters and MACs (counted) next to the paper's numbers."""

from __future__ import annotations

import argparse
import json

from mambaout.engine.config import add_config_flags, config_from_args, dataclass, option
from mambaout.models.variants import VARIANTS


@dataclass
class ModelsConfig:
    image_size: int = option(224, "resolution for the MAC count")
    json: bool = option(False, "print JSON instead of a table")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the variants: params, GMACs@224 (counted) and the paper's numbers")
    p.add_argument("pattern", nargs="?", default="", help="filter names, e.g. '*_rw' or 'tiny'")
    add_config_flags(p, ModelsConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, ModelsConfig)
    if cfg is None:
        return 0
    import torch

    from mambaout.measure.cost import count_macs, count_params
    from mambaout.models.factory import list_models
    from mambaout.models.variants import build_variant

    rows = []
    for name in list_models(args.pattern):
        with torch.device("meta"):  # counting needs shapes only: no weights are allocated or initialised
            model = build_variant(name).eval()
        v = VARIANTS[name]
        rows.append(
            dict(
                model=name,
                params_m=round(count_params(model) / 1e6, 3),
                gmacs=round(count_macs(model, (1, 3, cfg.image_size, cfg.image_size)) / 1e9, 3),
                paper_params_m=v.params_m,
                paper_gmacs=v.gmacs,
                paper_top1=v.top1,
            )
        )
    if cfg.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'model':<24}{'params (M)':>11}{f'GMACs@{cfg.image_size}':>12}{'paper params':>14}{'paper GMACs':>13}"
        f"{'paper top-1':>13}"
    )
    dash = "-"
    for r in rows:
        print(
            f"{r['model']:<24}{r['params_m']:>11.1f}{r['gmacs']:>12.2f}{r['paper_params_m'] or dash:>14}"
            f"{r['paper_gmacs'] or dash:>13}{r['paper_top1'] or dash:>13}"
        )
    return 0
