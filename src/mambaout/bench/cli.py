"""`mambaout bench`: params, GMACs, throughput, latency and peak memory, optionally against timm."""

from __future__ import annotations

import argparse
import json

from mambaout.engine.config import add_config_flags, config_from_args, dataclass, option


@dataclass
class BenchCommand:
    model: str = option("mambaout_femto", "variant name")
    batch_size: int = option(8, "images per timed forward")
    image_size: int = option(224, "input side in pixels")
    device: str = option("cpu", "cpu, cuda or cuda:N")
    dtype: str = option("fp32", "bf16/fp16 run under autocast", choices=("fp32", "bf16", "fp16"))
    channels_last: bool = option(False, "channels-last memory format for input and convs")
    compile: bool = option(False, "torch.compile the model(s)")
    fast: bool = option(False, "the package's fast inference path (mambaout.infer.fast)")
    reference: bool = option(False, "time our reference blocks, without the fused CPU kernels")
    warmup: int = option(3, "untimed rounds first")
    repeats: int = option(10, "timed rounds (the median is reported)")
    threads: int | None = option(None, "torch CPU threads (default: torch's choice)")
    compare_timm: bool = option(False, "also time timm's model with identical weights")
    peak_tflops: float | None = option(
        None, "the device's dense peak for the dtype (e.g. 989 for H100 bf16): prints the achieved fraction"
    )
    engine: str | None = option(
        None,
        "compare inference engines side by side instead: torch, torch_fast, timm, onnxruntime, onnxruntime_int8, "
        "openvino, openvino_int8 (needs pip install -e '.[export]')",
    )
    json: bool = option(False, "print the result as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure params, GMACs, img/s, latency and peak memory (optionally vs timm)")
    add_config_flags(p, BenchCommand, metavars=dict(engine="E[,E...]", model="NAME"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, BenchCommand)
    if cfg is None:
        return 0
    from mambaout.bench.speed import BenchConfig, run_benchmark
    from mambaout.models.factory import check_model_name

    if cfg.engine:
        return run_engines(cfg)
    bench = BenchConfig(
        model=check_model_name(cfg.model),
        batch_size=cfg.batch_size,
        image_size=cfg.image_size,
        device=cfg.device,
        dtype=cfg.dtype,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        fast=cfg.fast,
        fuse=not cfg.reference,
        warmup=cfg.warmup,
        repeats=cfg.repeats,
        threads=cfg.threads,
        compare_timm=cfg.compare_timm,
    )
    out = run_benchmark(bench)
    if cfg.peak_tflops:  # achieved = MACs x 2 x img/s
        for r in out["results"]:
            r["fraction_of_peak"] = r["gmacs"] * 2 * r["throughput"] / (cfg.peak_tflops * 1e3)
    if cfg.json:
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


def run_engines(cfg: BenchCommand) -> int:
    """`mambaout bench --engine ...`: throughput, latency and agreement of each engine, interleaved in one process."""
    from mambaout.export.bench import compare_engines, format_rows
    from mambaout.export.calibration import calibration_images
    from mambaout.models.factory import check_model_name, create_model

    engines = [e.strip() for e in cfg.engine.split(",") if e.strip()]
    if cfg.compare_timm and "timm" not in engines:
        engines.append("timm")
    model = create_model(check_model_name(cfg.model))
    images = calibration_images("digits", (cfg.image_size, cfg.image_size), count=16)  # agreement vs PyTorch fp32
    rows = compare_engines(
        model, engines, cfg.batch_size, cfg.image_size, cfg.repeats, images=images, threads=cfg.threads
    )
    print(json.dumps(rows, indent=2) if cfg.json else format_rows(rows))
    return 0
