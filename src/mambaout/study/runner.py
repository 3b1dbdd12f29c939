"""Train and measure: one run per (task, mixer, seed), every run with the same budget and the same recipe.

A task (`image_tasks`, `selective_copying`) supplies data, a model per mixer, a loss and an accuracy; this file owns
what is common: AdamW from timm's `create_optimizer_v2` (weight decay 0.05, none on biases, norms and the SSM's
A_log / D), timm's cosine schedule stepped per update (`create_scheduler_v2`, linear warm-up from 1e-6, down to
1 % of lr), seeded initialisation and data order, then the cost measurements of `measure.py`. Each run writes
its resolved configuration (`config.json`) and its numbers (`result.json`) into its own folder.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from tqdm import tqdm

from mambaout.bench.cost import count_macs, count_params
from mambaout.study.measure import inference_latency_ms, peak_memory_bytes


def resolve_budget(task: Any, budget: str | dict[str, Any]) -> dict[str, Any]:
    """The task's budget row (or a given dict) with `steps` filled in from epochs where the task counts those."""
    row = dict(task.budgets[budget]) if isinstance(budget, str) else dict(budget)
    if "steps" not in row:
        row["steps"] = row["epochs"] * task.steps_per_epoch(row["batch_size"])
    row["warmup_steps"] = min(row.get("warmup_steps", 0), max(row["steps"] - 1, 0))
    return row


def train(
    task: Any, model: torch.nn.Module, budget: dict[str, Any], seed: int, device: torch.device, desc: str = ""
) -> dict[str, Any]:
    """Train `model` on `task` for `budget["steps"]` updates; returns the final loss and the wall time."""
    optimizer = create_optimizer_v2(model, "adamw", lr=budget["lr"], weight_decay=budget.get("weight_decay", 0.05))
    # One scheduler "epoch" per update: timm's cosine then counts in steps, warm-up included.
    scheduler, _ = create_scheduler_v2(
        optimizer,
        "cosine",
        num_epochs=budget["steps"],
        warmup_epochs=budget["warmup_steps"],
        warmup_lr=1e-6,
        min_lr=budget["lr"] * 1e-2,
        step_on_epochs=False,
        updates_per_epoch=1,
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    batches = task.train_batches(budget["steps"], budget["batch_size"], generator)
    bar = tqdm(batches, total=budget["steps"], desc=desc, leave=False, file=sys.stderr, mininterval=1.0, disable=None)
    for step, (x, y) in enumerate(bar):
        loss = task.loss(model, x.to(device), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step_update(step + 1)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10) :]
    return dict(steps=len(losses), train_seconds=seconds, final_loss=sum(tail) / len(tail))


def measure_costs(
    task: Any, models: dict[str, torch.nn.Module], batch_size: int, device: torch.device, rounds: int = 3
) -> dict[str, dict[str, Any]]:
    """Per mixer: parameters, MACs per sample, latency at batch 1 and at the training batch, training-step memory.

    Latency is the best of `rounds` rounds that each time every mixer in turn (best of 3 calls at batch 1, of 1 at
    batch N), so background load on a shared machine hits all mixers alike and only ever adds time.
    """
    x1 = task.sample_input(1).to(device)
    xn = task.sample_input(batch_size).to(device)
    costs: dict[str, dict[str, Any]] = {}
    for mixer, model in models.items():
        model.train()
        # a stand-in loss: the backward pass is what costs memory
        peak = peak_memory_bytes(lambda m=model: m(xn).float().mean().backward(), device)
        model.zero_grad(set_to_none=True)
        costs[mixer] = dict(
            params=count_params(model),
            macs=count_macs(model, inputs=x1),
            latency_batch=batch_size,
            peak_train_mem_mb=peak / 2**20,
            latency_ms_b1=math.inf,
            latency_ms_bN=math.inf,
        )
    for _ in range(rounds):
        for mixer, model in models.items():
            c = costs[mixer]
            c["latency_ms_b1"] = min(c["latency_ms_b1"], inference_latency_ms(model, x1, repeats=3, warmup=1))
            c["latency_ms_bN"] = min(c["latency_ms_bN"], inference_latency_ms(model, xn, repeats=1, warmup=1))
    return costs


def environment(device: torch.device) -> dict[str, Any]:
    return dict(
        device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        python=platform.python_version(),
        machine=platform.machine(),
    )


def run_one(
    task: Any,
    mixer: str,
    seed: int,
    budget: dict[str, Any],
    device: torch.device,
    out_dir: Path,
    desc: str = "",
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train one (task, mixer, seed) and evaluate it; writes config.json and result.json, returns (result, model)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = task.build_model(mixer).to(device)
    config = dict(
        task=task.config(),
        mixer=mixer,
        mixer_kwargs=task.mixer_kwargs.get(mixer, {}),
        seed=seed,
        budget=budget,
        optimizer="adamw (timm create_optimizer_v2)",
        scheduler="cosine (timm)",
        model=getattr(model, "variant", type(model).__name__),
        params=count_params(model),
        environment=environment(device),
    )
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
    result = dict(task=task.name, mixer=mixer, seed=seed)
    result.update(train(task, model, budget, seed, device, desc=desc))
    result["accuracy"], result["eval_count"] = task.evaluate(model, device)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result, model


def summarize(runs: list[dict[str, Any]], cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """Mean and sample standard deviation of accuracy over seeds, with the mixer's measured cost."""
    accs = [r["accuracy"] for r in runs]
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else 0.0
    out = dict(
        accuracy_mean=mean,
        accuracy_std=std,
        accuracies=accs,
        seeds=[r["seed"] for r in runs],
        eval_count=runs[0]["eval_count"],
        train_seconds_mean=sum(r["train_seconds"] for r in runs) / len(runs),
        steps=runs[0]["steps"],
    )
    out.update(cost or {})
    return out


def build_tasks(
    names: list[str] | None = None,
    data: str | Path | None = None,
    model: str = "mambaout_pico",
    image_size: int | None = None,
    scan: str | None = None,
) -> list[Any]:
    """The study's tasks by name: "digits", "selective_copying", and "images" (needs `data`, an ImageFolder)."""
    from mambaout.errors import UserError
    from mambaout.study.image_tasks import DigitsTask, ImageFolderTask
    from mambaout.study.selective_copying import SelectiveCopyingTask

    if names is None:
        names = ["images"] if data else list(TASKS)
    unknown = [n for n in names if n not in (*TASKS, "images")]
    if unknown:
        raise UserError(f"unknown task {unknown[0]!r}; choose from {', '.join((*TASKS, 'images'))}")
    if "images" in names and not data:
        raise UserError("the 'images' task needs your images: pass --data DIR (class subfolders, ImageFolder layout)")
    image_kwargs = dict(model=model, mixer_kwargs={"ssm": {"scan": scan}} if scan else None)
    tasks = []
    for name in names:
        if name == "digits":
            tasks.append(DigitsTask(image_size=image_size or 32, **image_kwargs))
        elif name == "images":
            tasks.append(ImageFolderTask(data, image_size=image_size or 64, **image_kwargs))
        else:
            tasks.append(SelectiveCopyingTask())
    return tasks


TASKS = ("digits", "selective_copying")


def run_study(
    tasks: list[Any],
    seeds: list[int] = (0, 1),
    budget: str | dict[str, Any] = "default",
    mixers: list[str] | None = None,
    output: str | Path = "study_out",
    device: str | torch.device = "cpu",
    sweep: bool | list[int] = True,
    command: str = "mambaout study",
) -> dict[str, Any]:
    """Train every (task, mixer, seed), measure, compare with the paper's prediction, write the report.

    `budget`: "small", "default" or "full" (each task's table), or one dict (steps or epochs, batch_size, lr,
    warmup_steps) for every task. `sweep`: time blocks over sequence lengths at the sequence task's width (True:
    6D x 1/8..8, or a list of lengths).

    Writes `output`/results.json, report.md, report.html, the plots, and runs/<task>-<mixer>-seed<k>/ with each
    run's config.json and result.json. Prints one line per finished run. Returns the results dict.

    Example:
        >>> results = run_study(build_tasks(["digits"]), seeds=[0, 1], budget="small")  # doctest: +SKIP
    """
    from mambaout.mixers import check_mixer
    from mambaout.study.analyze import LongSequenceTest
    from mambaout.study.report import format_table, task_verdict, write_report
    from mambaout.study.sweep import latency_sweep

    start = time.perf_counter()
    device = torch.device(device)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds)
    plan = [(task, [check_mixer(m) for m in (mixers or task.mixers)]) for task in tasks]
    total, done = sum(len(ms) * len(seeds) for _, ms in plan), 0
    results: dict[str, Any] = dict(
        meta=dict(command=command, budget=budget, seeds=seeds, environment=environment(device)), tasks={}
    )
    for task, task_mixers in plan:
        row = resolve_budget(task, budget)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in task_mixers}
        first_models: dict[str, torch.nn.Module] = {}
        for seed in seeds:
            for mixer in task_mixers:
                done += 1
                tag = f"[{done}/{total}] {task.name} {mixer} seed {seed}"
                print(f"{tag}: training {row['steps']} steps...", file=sys.stderr, flush=True)
                r, model = run_one(
                    task, mixer, seed, row, device, output / "runs" / f"{task.name}-{mixer}-seed{seed}", desc=tag
                )
                runs[mixer].append(r)
                if seed == seeds[0]:
                    first_models[mixer] = model
                print(
                    f"{tag}: accuracy {100 * r['accuracy']:.1f}% in {r['train_seconds']:.0f} s "
                    f"(elapsed {(time.perf_counter() - start) / 60:.1f} min)",
                    file=sys.stderr,
                    flush=True,
                )
        print(f"{task.name}: measuring parameters, MACs, latency and memory...", file=sys.stderr, flush=True)
        costs = measure_costs(task, first_models, row["batch_size"], device)
        seq_len, dim = task.mixer_tokens()
        entry = dict(
            config=task.config(),
            budget=row,
            prediction=LongSequenceTest(task.name, seq_len, dim, task.causal).as_dict(),
            mixers={m: summarize(rs, costs[m]) for m, rs in runs.items()},
        )
        entry["verdict"] = task_verdict(entry)
        results["tasks"][task.name] = entry
    if sweep:
        seq_task = next((t for t in tasks if getattr(t, "dim", None)), tasks[0])
        seq_len, dim = seq_task.mixer_tokens()
        print(f"latency sweep at width {dim}...", file=sys.stderr, flush=True)
        results["sweep"] = latency_sweep(
            dim=dim,
            causal=seq_task.causal,
            device=device,
            seq_lens=sweep if isinstance(sweep, list) else _study_sweep_lens(dim),
        )
    results["meta"]["wall_seconds"] = time.perf_counter() - start
    (output / "results.json").write_text(json.dumps(results, indent=2, default=str))
    write_report(results, output)
    print(format_table(results))
    return results


def _study_sweep_lens(dim: int) -> list[int]:
    from mambaout.study.sweep import default_seq_lens

    return default_seq_lens(dim, (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8))
