"""`mambaout predict`: top-k classes of image files."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images: top-5 with ImageNet names (or your class names)")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--model", default="mambaout_tiny")
    p.add_argument("--pretrained", required=True, help="weights: .pth/.safetensors file, https URL, or hf-hub:org/repo")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--class-names", help="text file with one class name per line (default: ImageNet for 1000)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mambaout.errors import UserError
    from mambaout.infer.predict import predict
    from mambaout.models.factory import create_model
    from mambaout.models.fuse import fuse_for_inference

    names = None
    if args.class_names:
        try:
            with open(args.class_names) as f:
                names = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise UserError(f"cannot read class names file {args.class_names!r}: {e.strerror}") from e
    model = fuse_for_inference(create_model(args.model, pretrained=args.pretrained))
    results = predict(model, args.images, top_k=args.top_k, names=names, device=args.device)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["image"])
        for name, idx, p in r["top"]:
            print(f"  {100 * p:6.2f}%  {name} ({idx})")
    return 0
