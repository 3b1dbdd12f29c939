"""GPU check of what the CPU suite cannot see: the selective scan's GPU path (correct and how fast, by chunk length),
the models on CUDA against the CPU and against timm, bf16 autocast, and one training step of every study mixer.

    python benchmarks/check_gpu.py                   # table; --json out.json also writes the numbers

Correctness: every check draws fresh random inputs and compares with float64 on the CPU by ||out - ref|| / ||ref|| (TF32
off for the float32 checks). Timing: `mambaout.measure.timing.interleaved` (synchronised on CUDA), warm-up first, median
of the repeats; the scan's chunk lengths are timed interleaved round by round. benchmarks/check_gpu.sh runs this with
the model, training and dense benchmarks.
"""

from __future__ import annotations

import argparse
import json
import statistics
from functools import partial

import torch

from mambaout.measure import peak_memory_bytes
from mambaout.measure.timing import interleaved
from mambaout.models.factory import create_model
from mambaout.ssm import selective_scan, selective_scan_ref
from mambaout.ssm.chunked import CHUNK_GPU

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
DEVICE = "cuda"  # --device cpu: a dry run of the script itself


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def scan_inputs(batch: int, dim: int, state: int, length: int, groups: int = 1, device: str = "cuda") -> dict:
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    shape_bc = (batch, state, length) if groups == 1 else (batch, groups, state, length)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).to(device).requires_grad_()

    return {
        "u": r(batch, dim, length),
        "delta": r(batch, dim, length, scale=0.5),
        "A": (-torch.rand(dim, state, generator=g) * 2 - 0.1).to(device).requires_grad_(),
        "B": r(*shape_bc),
        "C": r(*shape_bc),
        "D": r(dim),
        "z": r(batch, dim, length),
        "delta_bias": r(dim, scale=0.1),
        "initial_state": r(batch, dim, state),
    }


def check_scan(device: str) -> list[dict]:
    """torch backend on the GPU against the sequential reference in float64 on the CPU: out, last state, every grad."""
    rows = []
    for batch, dim, state, length, groups in ((2, 32, 16, 300, 1), (3, 48, 8, 1000, 2), (1, 16, 16, 4097, 1)):
        x = scan_inputs(batch, dim, state, length, groups, device)
        x64 = {k: v.detach().double().cpu().requires_grad_() for k, v in x.items()}
        out, last = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="torch")
        ref, ref_last = selective_scan_ref(**x64, delta_softplus=True, return_last_state=True)
        w = torch.randn_like(ref)
        (out * w.to(device, out.dtype)).sum().backward()
        (ref * w).sum().backward()
        grad = max(rel(x[k].grad, x64[k].grad) for k in x)
        rows.append(
            {
                "shape": f"b{batch} D{dim} N{state} L{length} G{groups}",
                "out": rel(out, ref),
                "last_state": rel(last, ref_last),
                "worst_grad": grad,
            }
        )
    return rows


def time_scan_chunks(batch: int, dim: int, state: int, length: int, chunks: list[int], repeats: int) -> list[dict]:
    """Forward and forward + backward of the torch backend per chunk length, interleaved round by round."""
    import mambaout.ssm.chunked as chunked_mod

    x = scan_inputs(batch, dim, state, length, 1, DEVICE)
    for k in ("initial_state", "delta_bias"):
        x.pop(k)

    def run(c: int, backward: bool):
        chunked_mod.CHUNK_GPU = c
        try:
            if backward:
                out = selective_scan(**x, delta_softplus=True, backend="torch")
                out.sum().backward()
            else:
                with torch.no_grad():
                    selective_scan(**x, delta_softplus=True, backend="torch")
        finally:
            chunked_mod.CHUNK_GPU = CHUNK_GPU

    calls = {(c, backward): partial(run, c, backward) for c in chunks for backward in (False, True)}
    seconds = {k: statistics.median(v) for k, v in interleaved(calls, repeats, warmup=1, device=DEVICE).items()}
    updates = batch * dim * state * length
    return [
        {
            "chunk": c,
            "fwd_ms": 1e3 * seconds[c, False],
            "fwd_bwd_ms": 1e3 * seconds[c, True],
            "fwd_G_updates_s": updates / seconds[c, False] / 1e9,
            "fwd_bwd_peak_MiB": peak_memory_bytes(partial(run, c, True), DEVICE) / 2**20,
        }
        for c in chunks
    ]


def check_models(names: list[str]) -> list[dict]:
    """Each model's logits on CUDA (fp32, TF32 off; bf16 autocast) and timm's with the same weights, against the CPU
    in float64."""
    import timm

    rows = []
    for name in names:
        torch.manual_seed(0)
        model = create_model(name).eval()
        x = torch.randn(4, 3, 224, 224)
        with torch.no_grad():
            ref = model.double()(x.double())
            model.float().to(DEVICE)
            xc = x.to(DEVICE)
            fp32 = model(xc)
            with torch.autocast(DEVICE, dtype=torch.bfloat16):
                bf16 = model(xc.to(memory_format=torch.channels_last))
            theirs = timm.create_model(name, pretrained=False).eval().to(DEVICE)
            theirs.load_state_dict(model.state_dict())
            timm_out = theirs(xc)
        agree = float((bf16.float().argmax(-1).cpu() == ref.argmax(-1)).float().mean())
        rows.append(
            {
                "model": name,
                "cuda_fp32": rel(fp32, ref),
                "cuda_bf16": rel(bf16.float(), ref),
                "bf16_top1_agree": agree,
                "timm_cuda_fp32": rel(timm_out, ref),
            }
        )
    return rows


def check_mixers() -> list[dict]:
    """Three bf16-autocast training steps of each study mixer (pico at 32², digits-sized) on CUDA: the losses."""
    from mambaout.mixers import init_mixer_weights

    rows = []
    for mixer in ("conv", "ssm", "attn", "attn_causal"):
        torch.manual_seed(0)
        model = init_mixer_weights(create_model("mambaout_pico", num_classes=10, in_chans=1, mixer=mixer)).to(DEVICE)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x, y = torch.randn(16, 1, 32, 32, device=DEVICE), torch.randint(0, 10, (16,), device=DEVICE)
        losses = []
        for _ in range(3):
            with torch.autocast(DEVICE, dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        rows.append({"mixer": mixer, "loss_first": losses[0], "loss_last": losses[-1]})
    return rows


def check_stream() -> dict:
    """The SSM mixer streamed token by token on CUDA against its forward over the whole sequence."""
    from mambaout.ssm import Mamba

    torch.manual_seed(0)
    m = Mamba(64, d_state=16).to(DEVICE).eval()
    x = torch.randn(2, 200, 64, device=DEVICE)
    with torch.no_grad():
        full = m(x)
        conv_state, ssm_state = m.allocate_inference_cache(2)
        steps = [m.step(x[:, t : t + 1], conv_state, ssm_state)[0] for t in range(x.shape[1])]
    return {"mamba_step_vs_full": rel(torch.cat(steps, 1), full)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mambaout_femto,mambaout_tiny")
    p.add_argument("--chunks", default="16,32,64,128,256")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sections", help="comma-separated prefixes of the sections to run (default: all)")
    p.add_argument("--json")
    p.add_argument("--device", default="cuda", help="cpu: a dry run of this script, small sizes")
    args = p.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("check_gpu: no CUDA device")
    if DEVICE == "cuda":
        props = torch.cuda.get_device_properties(0)
        name = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        name = "cpu (dry run)"
    result: dict = {"device": name, "torch": torch.__version__}
    b, long, short = (8, 4096, 1024) if DEVICE == "cuda" else (1, 256, 64)
    import timm

    result["timm"] = timm.__version__
    print(result, flush=True)
    chunks = [int(c) for c in args.chunks.split(",")]
    sections = (
        ("scan_correct", lambda: check_scan(DEVICE)),
        ("scan_chunks_b8_D192_N16_L4096", lambda: time_scan_chunks(b, 192, 16, long, chunks, args.repeats)),
        ("scan_chunks_b8_D768_N16_L1024", lambda: time_scan_chunks(b, 768, 16, short, chunks, args.repeats)),
        ("scan_chunks_b64_D64_N16_L256", lambda: time_scan_chunks(8 * b, 64, 16, short // 4, chunks, args.repeats)),
        ("models", lambda: check_models(args.models.split(","))),
        ("mixers", check_mixers),
        ("stream", check_stream),
    )
    wanted = args.sections.split(",") if args.sections else [""]
    for key, fn in sections:
        if not any(key.startswith(w) for w in wanted):
            continue
        try:
            result[key] = fn()
        except Exception as e:  # one broken section must not hide the others on a rented machine
            result[key] = {"error": f"{type(e).__name__}: {e}"}
        print(key, json.dumps(result[key], indent=None), flush=True)
        if args.json:  # after every section: a step killed at its time limit keeps what it measured
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
