"""`mambaout detect ...` and `mambaout segment ...`: train, eval, predict and cost of the dense models.

Thin: every flag maps onto a field of `DetectConfig` / `SegmentConfig` or an argument of a library function.
Many GPUs: `torchrun --nproc_per_node 8 -m mambaout detect train ...` (the batch size is global).
"""

from __future__ import annotations

import argparse
import json

from mambaout.dense.runtime import AMP_CHOICES
from mambaout.train.distributed import close_processes


def _common_train_flags(p: argparse.ArgumentParser, batch: int, lr: float, wd: float) -> None:
    p.add_argument("--backbone", default="mambaout_tiny", help="MambaOut variant (default: %(default)s)")
    p.add_argument("--backbone-weights", help="ImageNet weights for the backbone: .pth/.safetensors, URL or hf-hub:id")
    p.add_argument("--output", default=None, help="run folder for config.json, log.jsonl, last.pt, metrics.json")
    p.add_argument(
        "--batch-size", type=int, default=batch, help="global batch over all processes (default: %(default)s)"
    )
    p.add_argument("--lr", type=float, default=lr, help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=wd, help="(default: %(default)s)")
    p.add_argument("--drop-path", type=float, default=None, help="backbone drop-path rate (default: its ImageNet rate)")
    p.add_argument("--mixer", default="conv", help="token mixer of the backbone blocks (the study's mixers)")
    p.add_argument(
        "--amp", default="auto", choices=AMP_CHOICES, help="mixed precision (auto: bf16 on GPUs that have it)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    p.add_argument("--workers", type=int, default=4, help="data loader processes per GPU")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--max-images", type=int, default=None, help="use only the first N images of each split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from <output>/last.pt if it exists")


def register(sub: argparse._SubParsersAction) -> None:
    det = sub.add_parser("detect", help="Mask R-CNN + FPN with a MambaOut backbone on COCO-format data")
    dsub = det.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = dsub.add_parser("train", help="train with the paper's 1x schedule (12 epochs, AdamW 1e-4, batch 16)")
    p.add_argument("--coco", required=True, help="folder with annotations/instances_<split>.json and <split>/ images")
    _common_train_flags(p, batch=16, lr=1e-4, wd=0.05)
    p.add_argument("--num-classes", type=int, default=None, help="incl. background (default: categories + 1)")
    p.add_argument("--train-split", default="train2017")
    p.add_argument("--val-split", default="val2017")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr-steps", type=int, nargs="+", default=[8, 11], help="epochs after which lr drops x0.1")
    p.add_argument("--warmup-iters", type=int, default=500)
    p.add_argument("--min-size", type=int, nargs="+", default=[800], help="shorter side; several: multi-scale")
    p.add_argument("--max-size", type=int, default=1333, help="longer side at most")
    p.add_argument("--fpn-channels", type=int, default=256)
    p.add_argument("--box-fc-channels", type=int, default=1024)
    p.add_argument("--mask-channels", type=int, default=256)
    p.add_argument(
        "--eval-every", type=int, default=1, help="epochs between COCO evaluations (0: at the end, -1: never)"
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop after N iterations (smoke runs)")
    p.set_defaults(func=run_detect_train)

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
        "train", help="train with the paper's schedule (160k iterations, AdamW 1e-4, batch 16, 512 crops)"
    )
    p.add_argument("--ade20k", required=True, help="the ADEChallengeData2016 folder (images/, annotations/)")
    _common_train_flags(p, batch=16, lr=1e-4, wd=0.01)
    p.add_argument("--num-classes", type=int, default=150)
    p.add_argument("--iterations", type=int, default=160_000)
    p.add_argument("--warmup-iters", type=int, default=1500)
    p.add_argument("--crop-size", type=int, default=512)
    p.add_argument("--scale", type=int, nargs=2, default=[2048, 512], help="rescale target before the random ratio")
    p.add_argument("--channels", type=int, default=512, help="UperNet decode head width")
    p.add_argument("--aux-channels", type=int, default=256, help="auxiliary FCN head width (0: no auxiliary head)")
    p.add_argument("--eval-every", type=int, default=16_000, help="iterations between evaluations (-1: never)")
    p.add_argument("--checkpoint-every", type=int, default=16_000, help="iterations between writes of last.pt")
    p.add_argument("--eval-mode", default="whole", choices=["whole", "slide"])
    p.set_defaults(func=run_segment_train)

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


def run_detect_train(args: argparse.Namespace) -> int:
    from mambaout.dense.detect import DetectConfig, train_detector

    cfg = DetectConfig(
        backbone=args.backbone,
        coco=args.coco,
        output=args.output or "runs/det",
        backbone_weights=args.backbone_weights,
        num_classes=args.num_classes,
        train_split=args.train_split,
        val_split=args.val_split,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        lr_steps=tuple(args.lr_steps),
        warmup_iters=args.warmup_iters,
        min_size=tuple(args.min_size),
        max_size=args.max_size,
        fpn_channels=args.fpn_channels,
        box_fc_channels=args.box_fc_channels,
        mask_channels=args.mask_channels,
        drop_path_rate=args.drop_path,
        mixer=args.mixer,
        amp=args.amp,
        device=args.device,
        workers=args.workers,
        eval_every=args.eval_every,
        log_every=args.log_every,
        max_steps=args.max_steps,
        max_images=args.max_images,
        seed=args.seed,
        resume=args.resume,
    )
    try:
        result = train_detector(cfg)
    finally:
        close_processes()
    if result["metrics"]:
        print(_format_detection(result["metrics"]))
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


def run_segment_train(args: argparse.Namespace) -> int:
    from mambaout.dense.segment import SegmentConfig, train_segmenter

    cfg = SegmentConfig(
        backbone=args.backbone,
        ade20k=args.ade20k,
        output=args.output or "runs/seg",
        backbone_weights=args.backbone_weights,
        num_classes=args.num_classes,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_iters=args.warmup_iters,
        crop_size=args.crop_size,
        scale=tuple(args.scale),
        channels=args.channels,
        aux_channels=args.aux_channels,
        drop_path_rate=args.drop_path,
        mixer=args.mixer,
        amp=args.amp,
        device=args.device,
        workers=args.workers,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        eval_mode=args.eval_mode,
        log_every=args.log_every,
        max_images=args.max_images,
        seed=args.seed,
        resume=args.resume,
    )
    try:
        result = train_segmenter(cfg)
    finally:
        close_processes()
    if result["metrics"]:
        print(_format_segmentation(result["metrics"]))
    if result["checkpoint"]:  # the main process
        print(f"checkpoint: {result['checkpoint']}")
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
