"""`mambaout bench`: params, GMACs, throughput, latency and peak memory, optionally against timm."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure params, GMACs, img/s, latency and peak memory (optionally vs timm)")
    p.add_argument("--model", default="mambaout_femto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="bf16/fp16 run under autocast")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format for input and convs")
    p.add_argument("--compile", action="store_true", help="torch.compile the model(s)")
    p.add_argument("--fast", action="store_true", help="the package's fast inference path (mambaout.infer.fast)")
    p.add_argument("--reference", action="store_true", help="time our reference blocks, without the fused CPU kernels")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--compare-timm", action="store_true", help="also time timm's model with identical weights")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense peak for the dtype (e.g. 989 for H100 bf16): prints the achieved fraction",
    )
    p.add_argument(
        "--engine",
        metavar="E[,E...]",
        help="compare inference engines side by side instead: torch, torch_fast, timm, onnxruntime, onnxruntime_int8, "
        "openvino, openvino_int8 (needs pip install -e '.[export]')",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mambaout.bench.speed import BenchConfig, run_benchmark
    from mambaout.models.factory import check_model_name

    if args.engine:
        return run_engines(args)
    cfg = BenchConfig(
        model=check_model_name(args.model),
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=args.device,
        dtype=args.dtype,
        channels_last=args.channels_last,
        compile=args.compile,
        fast=args.fast,
        fuse=not args.reference,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        compare_timm=args.compare_timm,
    )
    out = run_benchmark(cfg)
    if args.peak_tflops:  # achieved = MACs x 2 x img/s
        for r in out["results"]:
            r["fraction_of_peak"] = r["gmacs"] * 2 * r["throughput"] / (args.peak_tflops * 1e3)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    c = out["config"]
    flags = (
        [c["dtype"]] + [f for f in ("channels_last", "compile", "fast") if c[f]] + ([] if c["fuse"] else ["reference"])
    )
    print(
        f"{c['model']} @ {c['image_size']}px, batch {c['batch_size']}, {c['device']} ({out['machine']}), "
        f"{' '.join(flags)}, median of {c['repeats']}"
    )
    print(
        f"{'impl':<10}{'params (M)':>11}{'GMACs':>8}{'img/s':>10}{'± iqr':>8}"
        f"{'latency b1 (ms)':>17}{'peak mem (MB)':>15}"
    )
    for r in out["results"]:
        print(
            f"{r['impl']:<10}{r['params_m']:>11.2f}{r['gmacs']:>8.2f}{r['throughput']:>10.1f}{r['throughput_iqr']:>8.1f}"
            f"{r['latency_ms']:>17.2f}{r['peak_memory_mb']:>15.1f}"
            + (f"  {100 * r['fraction_of_peak']:.1f}% of peak" if "fraction_of_peak" in r else "")
        )
    if "ratio_throughput" in out:
        print(
            f"ours / timm: throughput x{out['ratio_throughput']:.3f}, batch-1 speed x{out['ratio_latency']:.3f}, "
            f"max |logit diff| {out['max_abs_logit_diff']:.2e}"
        )
    return 0


def run_engines(args: argparse.Namespace) -> int:
    """`mambaout bench --engine ...`: throughput, latency and agreement of each engine, interleaved in one process."""
    from mambaout.export.bench import compare_engines, format_rows
    from mambaout.export.calibration import calibration_images
    from mambaout.models.factory import check_model_name, create_model

    engines = [e.strip() for e in args.engine.split(",") if e.strip()]
    if args.compare_timm and "timm" not in engines:
        engines.append("timm")
    model = create_model(check_model_name(args.model))
    images = calibration_images("digits", (args.image_size, args.image_size), count=16)  # agreement vs PyTorch fp32
    rows = compare_engines(
        model, engines, args.batch_size, args.image_size, args.repeats, images=images, threads=args.threads
    )
    print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    return 0
