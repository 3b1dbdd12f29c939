"""`mambaout detect ...` and `mambaout segment ...`: train, eval, predict and cost of the dense models.

Thin: the train flags are generated from `DetectConfig` / `SegmentConfig` (each default stated once, there; `--config
x.yaml` and `--print-config` too); the other flags are the arguments of a library function.
Many GPUs: `torchrun --nproc_per_node 8 -m mambaout detect train ...` (the batch size is global).
"""

from __future__ import annotations

import argparse
import json

from mambaout.dense.configs import DetectConfig, SegmentConfig
from mambaout.engine.config import AMP_CHOICES, add_config_flags, flags_of, resolve_config, to_yaml


def register(sub: argparse._SubParsersAction) -> None:
    det = sub.add_parser("detect", help="Mask R-CNN + FPN with a MambaOut backbone on COCO-format data")
    dsub = det.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = dsub.add_parser(
        "train", help="train with the paper's 1x schedule (12 epochs, AdamW 1e-4, batch 16)", allow_abbrev=False
    )
    add_config_flags(p, DetectConfig, metavars=dict(coco="DIR", output="DIR"), grouped=True)
    p.set_defaults(func=run_dense_train, config_class=DetectConfig)

    p = dsub.add_parser("eval", help="COCO box and mask AP of a trained checkpoint")
    p.add_argument("--checkpoint", required=True, help="last.pt written by `mambaout detect train`")
    p.add_argument("--coco", required=True)
    p.add_argument("--split", default="val2017")
    _common_eval_flags(p)
    p.set_defaults(func=run_detect_eval)

    p = dsub.add_parser("predict", help="draw detected boxes and masks onto images (PNG)")
    p.add_argument("images", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--output", default=None, help="a .png for one image, else a folder (default: beside each image)")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--device", default=None)
    p.set_defaults(func=run_detect_predict)

    p = dsub.add_parser("cost", help="params and MACs of Mask R-CNN at 800x1280, as the paper's Table 2 counts them")
    _cost_flags(p, 800, 1280)
    p.set_defaults(func=run_cost, task="detect")

    seg = sub.add_parser("segment", help="UperNet with a MambaOut backbone on ADE20K")
    ssub = seg.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = ssub.add_parser(
        "train",
        help="train with the paper's schedule (160k iterations, AdamW 1e-4, batch 16, 512 crops)",
        allow_abbrev=False,
    )
    add_config_flags(p, SegmentConfig, metavars=dict(ade20k="DIR", output="DIR"), grouped=True)
    p.set_defaults(func=run_dense_train, config_class=SegmentConfig)

    p = ssub.add_parser("eval", help="mIoU of a trained checkpoint, single- or multi-scale")
    p.add_argument("--checkpoint", required=True, help="last.pt written by `mambaout segment train`")
    p.add_argument("--ade20k", required=True)
    p.add_argument("--split", default="validation")
    p.add_argument("--multi-scale", action="store_true", help="ratios 0.5..1.75 with flips, softmax averaged")
    p.add_argument("--mode", default=None, choices=["whole", "slide"], help="(default: the training run's)")
    _common_eval_flags(p)
    p.set_defaults(func=run_segment_eval)

    p = ssub.add_parser("predict", help="draw the colour-coded segmentation over images (PNG)")
    p.add_argument("images", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--output", default=None, help="a .png for one image, else a folder (default: beside each image)")
    p.add_argument("--multi-scale", action="store_true")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run_segment_predict)

    p = ssub.add_parser("cost", help="params and MACs of UperNet at 512x2048, as the paper's Table 3 counts them")
    _cost_flags(p, 512, 2048)
    p.set_defaults(func=run_cost, task="segment")


def _common_eval_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None)
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def _cost_flags(p: argparse.ArgumentParser, height: int, width: int) -> None:
    p.add_argument("--backbone", nargs="+", default=["mambaout_tiny", "mambaout_small", "mambaout_base"])
    p.add_argument("--height", type=int, default=height)
    p.add_argument("--width", type=int, default=width)
    p.add_argument("--json", action="store_true")


def run_dense_train(args: argparse.Namespace) -> int:
    cls = args.config_class
    cfg = resolve_config(cls, flags_of(args, cls), args.config)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    if cls is DetectConfig:
        from mambaout.dense.detect import train_detector as train  # noqa: F401
    else:
        from mambaout.dense.segment import train_segmenter as train
    from mambaout.engine.distributed import close_processes

    try:
        result = train(cfg)
    finally:
        close_processes()
    if result["metrics"]:
        fmt = _format_detection if cls is DetectConfig else _format_segmentation
        print(fmt(result["metrics"]))
    if result["checkpoint"]:  # the main process
        print(f"checkpoint: {result['checkpoint']}")
    return 0


def run_detect_eval(args: argparse.Namespace) -> int:
    from mambaout.dense.detect import eval_checkpoint

    metrics = eval_checkpoint(
        args.checkpoint, args.coco, args.split, device=args.device, max_images=args.max_images, amp=args.amp
    )
    if metrics:
        print(json.dumps(metrics, indent=2) if args.json else _format_detection(metrics))
    return 0


def run_detect_predict(args: argparse.Namespace) -> int:
    from mambaout.dense.predict import predict_detection

    for path, count in predict_detection(args.checkpoint, args.images, args.output, args.score_threshold, args.device):
        print(f"{path}: {count} objects")
    return 0


def run_segment_eval(args: argparse.Namespace) -> int:
    from mambaout.dense.segment import eval_checkpoint

    metrics = eval_checkpoint(
        args.checkpoint,
        args.ade20k,
        args.split,
        multi_scale=args.multi_scale,
        mode=args.mode,
        device=args.device,
        max_images=args.max_images,
        amp=args.amp,
    )
    if metrics:
        print(json.dumps(metrics, indent=2) if args.json else _format_segmentation(metrics, args.multi_scale))
    return 0


def run_segment_predict(args: argparse.Namespace) -> int:
    from mambaout.dense.predict import predict_segmentation

    for path, count in predict_segmentation(args.checkpoint, args.images, args.output, args.multi_scale, args.device):
        print(f"{path}: {count} classes")
    return 0


def run_cost(args: argparse.Namespace) -> int:
    from mambaout.dense.cost import cost_table
    from mambaout.models.factory import check_model_name

    rows = cost_table(args.task, [check_model_name(b) for b in args.backbone], args.height, args.width)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    model = "Mask R-CNN" if args.task == "detect" else "UperNet"
    print(f"{model} at {rows[0]['input']} (MACs as mm{'det' if args.task == 'detect' else 'seg'}'s get_flops counts)")
    print(f"{'backbone':<18}{'params (M)':>11}{'paper':>7}{'GMACs':>9}{'paper':>7}{'backbone GMACs':>16}")
    for r in rows:
        paper_p = f"{r['paper_params_m']:.0f}" if r["paper_params_m"] else "-"
        paper_m = f"{r['paper_gmacs']:.0f}" if r["paper_gmacs"] else "-"
        print(
            f"{r['backbone']:<18}{r['params_m']:>11.1f}{paper_p:>7}{r['gmacs']:>9.1f}{paper_m:>7}{r['backbone_gmacs']:>16.1f}"
        )
    return 0


def _format_detection(m: dict) -> str:
    return (
        f"box AP {100 * m['bbox_AP']:.1f} (AP50 {100 * m['bbox_AP50']:.1f}, AP75 {100 * m['bbox_AP75']:.1f})  "
        f"mask AP {100 * m['segm_AP']:.1f} (AP50 {100 * m['segm_AP50']:.1f}, AP75 {100 * m['segm_AP75']:.1f})"
    )


def _format_segmentation(m: dict, multi_scale: bool = False) -> str:
    return (
        f"{'multi-scale' if multi_scale else 'single-scale'} mIoU {100 * m['mIoU']:.2f}  mAcc {100 * m['mAcc']:.2f}  "
        f"aAcc {100 * m['aAcc']:.2f}"
    )
