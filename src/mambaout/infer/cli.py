"""`mambaout predict`: top-k classes of image files."""

from __future__ import annotations

import argparse
import json

from mambaout.engine.config import add_config_flags, config_from_args, dataclass, option


@dataclass
class PredictConfig:
    model: str = option("mambaout_tiny", "variant name")
    pretrained: str | None = option(None, "weights: .pth/.safetensors file, https URL, or hf-hub:org/repo")
    top_k: int = option(5, "classes listed per image")
    class_names: str | None = option(None, "text file with one class name per line (default: ImageNet for 1000)")
    device: str = option("cpu", "cpu, cuda or cuda:N")
    json: bool = option(False, "print JSON instead of text")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images: top-5 with ImageNet names (or your class names)")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    add_config_flags(
        p, PredictConfig, metavars=dict(pretrained="WEIGHTS", class_names="FILE"), required=("pretrained",)
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, PredictConfig)
    if cfg is None:
        return 0
    from mambaout.errors import UserError
    from mambaout.infer.predict import predict
    from mambaout.models.factory import create_model
    from mambaout.models.fuse import fuse_for_inference

    names = None
    if cfg.class_names:
        try:
            with open(cfg.class_names) as f:
                names = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise UserError(f"cannot read class names file {cfg.class_names!r}: {e.strerror}") from e
    model = fuse_for_inference(create_model(cfg.model, pretrained=cfg.pretrained))
    results = predict(model, args.images, top_k=cfg.top_k, names=names, device=cfg.device)
    if cfg.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["image"])
        for name, idx, p in r["top"]:
            print(f"  {100 * p:6.2f}%  {name} ({idx})")
    return 0
