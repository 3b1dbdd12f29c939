"""Throughput, latency and peak memory of a model's inference, optionally side by side with timm's same model.

Timing protocol (`mambaout.measure.timing`, shared by every command): `warmup` untimed rounds, then `repeats` timed
forwards of one batch each; the reported number is the median (and the spread is the inter-quartile range). With
`compare_timm=True` timm's model is built with identical weights in the same process and the two are timed in
alternation (ours, timm, ours, timm, ...), so that whatever else the machine is doing falls on both alike; the ratio of
medians is printed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from mambaout.errors import UserError
from mambaout.measure import count_macs, count_params, interleaved, median_iqr, peak_memory_bytes
from mambaout.measure.machine import machine_description

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class BenchConfig:
    model: str = "mambaout_femto"
    batch_size: int = 8
    image_size: int = 224
    device: str = "cpu"
    dtype: str = "fp32"  # fp32, or bf16/fp16 autocast
    channels_last: bool = False
    compile: bool = False
    fast: bool = False  # mambaout.infer.fast: the package's fast inference path
    fuse: bool = True  # our model with the fused CPU blocks (mambaout.models.fuse); False: the reference blocks
    warmup: int = 3
    repeats: int = 10
    compare_timm: bool = False
    threads: int | None = None


@dataclass
class BenchResult:
    impl: str
    params_m: float
    gmacs: float
    throughput: float  # images/s at batch_size, median
    throughput_iqr: float
    latency_ms: float  # batch 1, median
    latency_iqr_ms: float
    peak_memory_mb: float  # activations at batch_size, beyond weights and input
    extra: dict[str, Any] = field(default_factory=dict)


def prepare(
    model: nn.Module, cfg: BenchConfig, example: torch.Tensor, ours: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Move/convert a model as the config asks and return the callable to time. `--fast` is our inference path, so
    it applies to our model only: timm's stays timm's eager model, the baseline it is compared with."""
    device = torch.device(cfg.device)
    model = model.to(device).eval()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.fast:
        from mambaout.infer.fast import optimize_for_inference

        return optimize_for_inference(model, example, compile=cfg.compile) if ours else model
    if cfg.compile:
        model = torch.compile(model)
    return model


def run_benchmark(cfg: BenchConfig) -> dict[str, Any]:
    """Measure our model (and timm's with identical weights if `cfg.compare_timm`). Returns a JSON-able dict.

    Example:
        >>> run_benchmark(BenchConfig("mambaout_femto", batch_size=8, compare_timm=True))  # doctest: +SKIP
    """
    from mambaout.models.factory import create_model
    from mambaout.models.fuse import fuse_for_inference

    if cfg.dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {cfg.device!r} asked for but no CUDA GPU is visible; use --device cpu")
    if cfg.batch_size < 1 or cfg.image_size < 32 or cfg.repeats < 1:
        raise UserError("batch size and repeats must be >= 1 and the image size >= 32")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    ours = create_model(cfg.model)
    if cfg.fuse:
        fuse_for_inference(ours)
    models: dict[str, nn.Module] = {"mambaout": ours}
    if cfg.compare_timm:
        import timm

        if cfg.model not in timm.list_models("mambaout*"):
            raise UserError(f"timm has no {cfg.model}; --compare-timm works for the published variants")
        theirs = timm.create_model(cfg.model, pretrained=False)
        theirs.load_state_dict(ours.state_dict())
        models["timm"] = theirs

    shape = (cfg.batch_size, 3, cfg.image_size, cfg.image_size)
    x = torch.randn(shape, device=device)
    x1 = x[:1].clone()
    if cfg.channels_last:
        x, x1 = x.contiguous(memory_format=torch.channels_last), x1.contiguous(memory_format=torch.channels_last)
    cost = {k: (count_params(m), count_macs(m, (1, 3, cfg.image_size, cfg.image_size))) for k, m in models.items()}
    fns = {k: prepare(m, cfg, x, ours=k == "mambaout") for k, m in models.items()}
    autocast = torch.autocast(device.type, dtype=DTYPES[cfg.dtype]) if cfg.dtype != "fp32" else nullcontext()
    with torch.inference_mode(), autocast:
        outputs = {k: fn(x) for k, fn in fns.items()}
        calls = {(k, "batch"): (lambda fn=fn: fn(x)) for k, fn in fns.items()}
        calls |= {(k, "one"): (lambda fn=fn: fn(x1)) for k, fn in fns.items()}
        seconds = interleaved(calls, cfg.repeats, cfg.warmup, device)  # ours, timm, ours, timm, ...
        times = {k: seconds[(k, "batch")] for k in fns}
        lat = {k: seconds[(k, "one")] for k in fns}
        mem = {k: peak_memory_bytes(lambda fn=fn: fn(x), device) for k, fn in fns.items()} if not cfg.compile else {}

    results = []
    for k in fns:
        thr, thr_iqr = median_iqr([cfg.batch_size / t for t in times[k]])
        l, l_iqr = median_iqr([1000 * t for t in lat[k]])
        results.append(
            BenchResult(
                impl=k,
                params_m=cost[k][0] / 1e6,
                gmacs=cost[k][1] / 1e9,
                throughput=thr,
                throughput_iqr=thr_iqr,
                latency_ms=l,
                latency_iqr_ms=l_iqr,
                peak_memory_mb=mem[k] / 2**20 if k in mem else float("nan"),
            )
        )
    out: dict[str, Any] = {
        "config": asdict(cfg),
        "machine": machine_description(device),
        "results": [asdict(r) for r in results],
    }
    if cfg.compare_timm:
        a, b = results
        out["ratio_throughput"] = a.throughput / b.throughput
        out["ratio_latency"] = b.latency_ms / a.latency_ms  # > 1: ours is faster
        out["max_abs_logit_diff"] = (outputs["mambaout"].float() - outputs["timm"].float()).abs().max().item()
    return out
