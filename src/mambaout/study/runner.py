"""Train and measure: one run per (task, mixer, seed), every run with the same budget and the same recipe.

A task (`image_tasks`, `selective_copying`) supplies data, a model per mixer, a loss and an accuracy; this file owns
what is common: the recipe of a run (`StudyRun`: AdamW, weight decay 0.05, none on biases, norms and the SSM's
A_log / D; timm's cosine stepped per update, linear warm-up from 1e-6, down to 1 % of lr), trained in memory by the
engine's driver (`mambaout.engine.run`, the one every pipeline uses) with seeded initialisation and data order, then
the cost measurements of `measure.py`. Each run writes its resolved configuration (`config.json`) and its numbers
(`result.json`) into its own folder.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mambaout.engine.run import OptimizerSpec, RunConfig, ScheduleSpec, Task, run
from mambaout.measure import count_macs, count_params, interleaved, peak_memory_bytes
from mambaout.measure.machine import cpu_name


def resolve_budget(task: Any, budget: str | dict[str, Any]) -> dict[str, Any]:
    """The task's budget row (or a given dict) with `steps` filled in from epochs where the task counts those."""
    row = dict(task.budgets[budget]) if isinstance(budget, str) else dict(budget)
    if "steps" not in row:
        row["steps"] = row["epochs"] * task.steps_per_epoch(row["batch_size"])
    row["warmup_steps"] = min(row.get("warmup_steps", 0), max(row["steps"] - 1, 0))
    if hasattr(task, "run_one"):  # trains itself (the line): the stop rule is the study's runs' own
        row.pop("stop_loss", None)
        row.pop("stop_window", None)
    elif row.get("stop_loss") is not None:
        row.setdefault("stop_window", RunConfig.stop_window)
    return row


class StudyRun(Task):
    """One (task, mixer, seed) run as a task of the engine's driver: the study task's model, batches and loss; AdamW
    (weight decay 0.05 unless the budget says otherwise); timm's cosine per update with linear warm-up from 1e-6,
    down to 1 % of lr."""

    def __init__(self, task: Any, mixer: str, budget: dict[str, Any], seed: int, device: torch.device):
        self.task, self.mixer, self.budget, self.seed, self.device = task, mixer, budget, seed, device
        self.optimizer = OptimizerSpec("adamw", budget["lr"], budget.get("weight_decay", 0.05))
        self.schedule = ScheduleSpec(budget["warmup_steps"], warmup_lr=1e-6, min_lr=budget["lr"] * 1e-2)

    def model(self) -> torch.nn.Module:
        return self.task.build_model(self.mixer)

    def train_data(self):
        generator = torch.Generator().manual_seed(self.seed)
        return self.task.train_batches(self.budget["steps"], self.budget["batch_size"], generator)

    def loss(self, forward: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.task.loss(forward, batch[0].to(self.device), batch[1].to(self.device))


def train(
    task: Any, mixer: str, budget: dict[str, Any], seed: int, device: torch.device, desc: str = ""
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train `task`'s model for `mixer` for `budget["steps"]` updates, in memory, or fewer where the budget has a
    `stop_loss` and the run converges first (the engine's stop rule: the mean training loss of the last
    `stop_window` updates at or below it); returns ({steps, converged_at, train_seconds, final_loss},
    the trained model). A bar only when asked (`desc`): runs in worker processes report through the study's progress
    lines instead."""
    config = RunConfig(
        updates=budget["steps"],
        batch_size=budget["batch_size"],
        device=str(device),
        amp="none",
        seed=seed,
        progress="bar" if desc else "none",
        desc=desc,
        stop_loss=budget.get("stop_loss"),
        stop_window=budget.get("stop_window", RunConfig.stop_window),
    )
    result = run(StudyRun(task, mixer, budget, seed, device), config)
    trained = dict(steps=len(result.losses), converged_at=result.converged_at, train_seconds=result.seconds)
    return dict(trained, final_loss=result.final_loss), result.model


def measure_costs(
    task: Any, models: dict[str, torch.nn.Module], batch_size: int, device: torch.device, rounds: int = 3
) -> dict[str, dict[str, Any]]:
    """Per mixer: parameters, MACs per sample, latency at batch 1 and at the training batch, training-step memory.

    Latency is the median over `rounds` rounds that each time every mixer in turn (3 calls at batch 1, 1 at batch N,
    after one untimed round), so background load on a shared machine hits all mixers alike
    (`mambaout.measure.timing`, as every command).
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
        )
        model.eval()
    with torch.inference_mode():
        b1 = interleaved({m: (lambda m=m: models[m](x1)) for m in models}, 3 * rounds, warmup=1, device=device)
        bn = interleaved({m: (lambda m=m: models[m](xn)) for m in models}, rounds, warmup=1, device=device)
    for mixer in models:
        costs[mixer]["latency_ms_b1"] = 1e3 * statistics.median(b1[mixer])
        costs[mixer]["latency_ms_bN"] = 1e3 * statistics.median(bn[mixer])
    return costs


def environment(device: torch.device, threads: int = 1) -> dict[str, Any]:
    """Where the runs ran: `device` is "cpu" (with the CPU's name and cores in `cpu`) or the GPU's name."""
    from mambaout.study.schedule import machine_load

    cores, _ = machine_load()
    return dict(
        device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        cpu=f"{cpu_name()}, {cores} core{'s' if cores != 1 else ''}, {torch.backends.cpu.get_cpu_capability()}",
        torch=torch.__version__,
        threads=threads,
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
    """Train one (task, mixer, seed) and evaluate it; writes config.json and result.json, returns (result, model).

    A task with its own `run_one` (the line: an encoder shared by every run, AUROC per anomaly kind) trains and scores
    itself, on the same engine; its model stays inside it (None here)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(task, "run_one"):
        config = dict(task=task.config(), mixer=mixer, seed=seed, budget=budget, environment=environment(device, 1))
        (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
        result = task.run_one(mixer, seed, budget, out_dir, stream_frames=())  # streaming cost: measured afterwards
        (out_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
        return result, None
    trained, model = train(task, mixer, budget, seed, device, desc=desc)
    config = dict(
        task=task.config(),
        mixer=mixer,
        mixer_kwargs=task.mixer_kwargs.get(mixer, {}),
        seed=seed,
        budget=budget,
        optimizer="adamw (timm optimizer factory)",
        scheduler="cosine (timm)",
        model=getattr(model, "variant", type(model).__name__),
        params=count_params(model),
        environment=environment(device, torch.get_num_threads()),
    )
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
    result = dict(task=task.name, mixer=mixer, seed=seed)
    result.update(trained)
    result["accuracy"], result["eval_count"] = task.evaluate(model, device)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result, model


@dataclass(frozen=True)
class RunJob:
    """One (task, mixer, seed) run as the scheduler sees it: `task` indexes the study's task list."""

    task: int
    mixer: str
    seed: int
    budget: dict[str, Any]
    device: str
    out_dir: Path
    weight: float  # estimated seconds: the longest runs start first


def execute_job(tasks: list[Any], job: RunJob) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Run `job` (in a worker process or here); returns its result and its trained weights, on the CPU. A task set up
    aside (`schedule.SetUpAside`) is loaded on its first job in this process."""
    from mambaout.study.schedule import SetUpAside

    task = tasks[job.task]
    if isinstance(task, SetUpAside):
        task = tasks[job.task] = task.task()
    result, model = run_one(task, job.mixer, job.seed, job.budget, torch.device(job.device), job.out_dir)
    return result, {k: v.detach().cpu() for k, v in model.state_dict().items()} if model is not None else {}


def probe_seconds(task: Any, mixer: str, budget: dict[str, Any], device: torch.device, steps: int = 5) -> float:
    """Training seconds of one run of `budget`, timed on this machine: one update first (it compiles the SSM's
    kernels into numba's cache unless `mambaout study` already did aside, so the workers load them instead of each
    compiling them, and warms torch's kernels),
    then `steps` timed updates, times the budget's steps. On one thread, as the workers train, and in this process's
    CPU time: the probes may run while other work (the line's set-up aside, the first runs) shares the cores.

    It replaced per-step constants measured on one CPU: the mixers' relative costs change with the instruction set
    (the fused scan loses more than attention's matmuls on AVX2), so the study's ETA and its longest-first order come
    from this probe.
    """
    from mambaout.study.schedule import one_thread

    steps = max(1, min(steps, budget["steps"]))
    with one_thread():
        train(task, mixer, dict(budget, steps=1, warmup_steps=0), seed=0, device=device)
        cpu = time.process_time()
        train(task, mixer, dict(budget, steps=steps, warmup_steps=min(budget["warmup_steps"], steps - 1)), 0, device)
        cpu = time.process_time() - cpu
    return cpu / steps * budget["steps"]


def estimate_seconds(task: Any, mixer: str, budget: dict[str, Any], device: torch.device, seeds: int = 1) -> float:
    """A run's expected training seconds, timed here (`probe_seconds`): the budget's steps for tasks the study trains
    itself; for tasks that train themselves (the line) the updates they say a run makes (`run_updates`, its share of
    a learning-rate sweep included; 0.5 s for a mixer that trains nothing), else a nominal 10 s.

    (The line's estimate was a constant per update, measured on one CPU: on the AMD EPYC here it read 27 s for runs
    of 11 to 26 s, and the study's first ETA 27 % over its real time.)"""
    if not hasattr(task, "run_one"):
        return probe_seconds(task, mixer, budget, device)
    if not hasattr(task, "run_updates"):
        return 10.0
    updates = task.run_updates(mixer, budget, seeds)
    if not updates:
        return 0.5
    steps = max(1, round(updates))
    return probe_seconds(task, mixer, dict(budget, steps=steps), device)


def estimate_runs(
    task: Any, mixers: list[str], budget: dict[str, Any], device: torch.device, seeds: int
) -> dict[str, float]:
    """`estimate_seconds` of each mixer's runs of `task` (a `SetUpAside` calls it where it set the task up)."""
    return {m: estimate_seconds(task, m, budget, device, seeds) for m in mixers}


def set_up_runs(
    task: Any, mixers: list[str], budget: dict[str, Any], device: torch.device, seeds: int
) -> dict[str, float]:
    """What a task's set-up ends with, aside or here, before its runs are queued: each mixer's learning-rate sweep,
    where the task has one (the line: once per mixer, shared by its seeds, whose runs may start side by side and would
    otherwise each sweep, into the same folder), then `estimate_runs` for the runs alone."""
    from mambaout.study.schedule import one_thread

    if hasattr(task, "learning_rate"):
        with one_thread():  # as the runs train: the sweep's choice must not depend on where it was made
            for mixer in mixers:
                task.learning_rate(mixer, budget)
        budget = dict(budget, lrs=())  # swept: a run's updates are its own steps
    return estimate_runs(task, mixers, budget, device, seeds)


STREAM_FRAMES = (100, 1000, 10000)


def measure_stream_costs(
    task: Any, mixers: list[str], runs: dict[str, list[dict[str, Any]]], frames: tuple[int, ...] = STREAM_FRAMES
) -> dict[str, dict[str, Any]]:
    """Per mixer of a streaming task (the line): parameters, MACs per frame of the temporal model, and the streaming
    step's latency and state memory after each count of `frames` (state memory is where the mixers differ most on a
    stream: attention keeps every past key, the SSM a fixed state). Per-kind AUROC is averaged over seeds."""
    costs: dict[str, dict[str, Any]] = {}
    for mixer in mixers:
        model = task.build_model(mixer).eval()
        x = task.sample_input(1)
        macs = count_macs(model, inputs=x if mixer != "frame" else x[0]) / x.shape[1]
        stream = task.stream_cost(model, frames)
        last = stream[max(frames)]
        kinds = sorted({k for r in runs[mixer] for k in r.get("auroc_per_kind", {})})
        costs[mixer] = dict(
            params=runs[mixer][0].get("params", count_params(model)),
            macs=macs,
            latency_ms_b1=last["step_ms"],
            state_mb=last["state_bytes"] / 2**20,
            stream={str(n): v for n, v in stream.items()},
            auroc_per_kind={k: sum(r["auroc_per_kind"][k] for r in runs[mixer]) / len(runs[mixer]) for k in kinds},
            auroc_per_kind_seeds={k: [r["auroc_per_kind"][k] for r in runs[mixer]] for k in kinds},
            timeline=runs[mixer][0].get("timeline"),
        )
        if all("auroc_bootstrap" in r for r in runs[mixer]):  # the line task's intervals, probe and ceilings
            from mambaout.anomaly.verdict import mixer_summary

            costs[mixer].update(mixer_summary(runs[mixer]))
    return costs


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
        steps_per_seed=[r.get("steps") for r in runs],
    )
    if all(r.get("steps") for r in runs):
        out["step_seconds_mean"] = sum(r["train_seconds"] / r["steps"] for r in runs) / len(runs)
    out.update(cost or {})
    return out


def build_tasks(
    names: list[str] | None = None,
    data: str | Path | None = None,
    model: str = "mambaout_pico",
    image_size: int | None = None,
    scan: str | None = None,
    budget: str = "default",
    work_dir: str | Path | None = None,
) -> list[Any]:
    """The study's tasks by name: "digits", "selective_copying", "line" (video anomaly detection: the built-in
    conveyor line, or `data` in a video layout) and "images" (`data`, an ImageFolder). With `data` and no names:
    "line" if `data` is a video dataset, else "images". `work_dir`: where the line task keeps its data and encoder.
    With the "full" budget the built-in line comes twice: "line" (generator seed 0) and "line-g1" (seed 1). The line
    comes as a `schedule.SetUpAside` (its set-up is a minute of one core): `run_study` makes it while other runs train,
    or `.build()` makes it here."""
    from mambaout.errors import UserError
    from mambaout.study.image_tasks import DigitsTask, ImageFolderTask
    from mambaout.study.schedule import SetUpAside
    from mambaout.study.selective_copying import SelectiveCopyingTask

    if names is None:
        names = [_data_task(data)] if data else list(TASKS)
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
        elif name == "line":
            from mambaout.anomaly import study_task

            video = data if data and "images" not in names else None  # --data feeds the images task when both run
            lines = [("line", dict(data=video))]
            if video is None and budget == "full":  # a second rendering: a result about the line, not one video
                lines.append(("line-g1", dict(line=dict(seed=1))))
            for line, kwargs in lines:
                work = Path(work_dir or "study_out") / line
                kwargs.update(work_dir=work, budget=budget)
                tasks.append(SetUpAside(study_task.LineTask, kwargs, work / "task.pt", name=line))
        else:
            tasks.append(SelectiveCopyingTask())
    return tasks


def _data_task(data: str | Path) -> str:
    """'line' for a folder in one of the video layouts mambaout.video reads, else 'images'."""
    from mambaout.errors import UserError
    from mambaout.video import detect_layout

    try:
        detect_layout(data)
    except UserError:
        return "images"
    return "line"


TASKS = ("digits", "selective_copying", "line")


def run_study(
    tasks: list[Any],
    seeds: list[int] = (0, 1),
    budget: str | dict[str, Any] = "default",
    mixers: list[str] | None = None,
    output: str | Path = "study_out",
    device: str | torch.device = "cpu",
    sweep: bool | list[int] = True,
    command: str = "mambaout study",
    workers: int | None = None,
) -> dict[str, Any]:
    """Train every (task, mixer, seed), measure, compare with the paper's prediction, write the report.

    `budget`: "small", "default" or "full" (each task's table), or one dict (steps or epochs, batch_size, lr,
    warmup_steps) for every task. `sweep`: time blocks over sequence lengths at the sequence task's width (True:
    6D x 1/8..8, or a list of lengths). `workers`: processes that train runs side by side, one thread each
    (default: the free cores on a CPU, 1 on a GPU); any number gives the same per-run results (`schedule.py`).
    Costs (latency, memory, the sweep) are measured afterwards in this process, on one thread, every mixer in turn.

    Writes `output`/results.json, report.md, report.html, the plots, and runs/<task>-<mixer>-seed<k>/ with each
    run's config.json and result.json. Prints one line per finished run with an overall ETA. Returns the results.

    Example:
        >>> results = run_study(build_tasks(["digits"]), seeds=[0, 1], budget="small")  # doctest: +SKIP
    """
    from mambaout.errors import UserError
    from mambaout.mixers import check_mixer
    from mambaout.study.analyze import LongSequenceTest
    from mambaout.study.progress import Progress
    from mambaout.study.render import format_table, write_report
    from mambaout.study.schedule import (
        SetUpAside,
        busy_warning,
        compile_kernels_aside,
        joined,
        machine_load,
        one_thread,
        run_jobs,
    )
    from mambaout.study.stats import task_verdict
    from mambaout.study.sweep import latency_sweep

    start = time.perf_counter()
    device = torch.device(device)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds)
    if not seeds or (workers is not None and workers < 1):
        raise UserError(f"a study needs at least one seed and one worker, got seeds {seeds} and workers {workers}")
    # One worker per core: one-thread workers take turns on a busy core instead of spinning against other jobs the
    # way OpenMP threads do, so every core a worker can get still shortens the study (measured: 5.0 min with 2
    # workers at load 2, 9.2 min with 1).
    workers = workers or (1 if device.type == "cuda" else machine_load()[0])
    tasks = list(tasks)
    # a task set up aside answers for its class until it is ready: its name, mixers and budgets
    declared = [t.factory if isinstance(t, SetUpAside) else t for t in tasks]
    rows = [resolve_budget(task, budget) for task in declared]
    # a task's own mixers (the line's `frame`: no temporal model) are valid for it; the rest are the model mixers
    plan = [[m if m in task.mixers else check_mixer(m) for m in (mixers or task.mixers)] for task in declared]
    aside = {t: task for t, task in enumerate(tasks) if isinstance(task, SetUpAside)}
    # with several workers, set up while the other tasks' runs train (timing its own runs there); with one, here
    pending = list(aside) if workers > 1 else []
    compiling = None
    if device.type == "cpu":
        # numba's cache, filled before the first run here or in a worker, beside a set-up made here: the depthwise
        # conv's weight gradient (every 2-D model), the SSM's kernels when a task trains one
        compiling = compile_kernels_aside(ssm="ssm" in {m for ms in plan for m in ms})
    for t in aside:
        if t in pending:
            timing = functools.partial(set_up_runs, mixers=plan[t], budget=rows[t], device=device, seeds=len(seeds))
            tasks[t].start(timing)
        else:
            tasks[t] = tasks[t].build()
    note = compiling and joined(compiling)
    if note:
        print(f"mambaout study: note: {note}", file=sys.stderr, flush=True)
    note = "timing a few training steps of every model for the ETA (compiling the SSM's kernels if not yet done)..."
    print(note, file=sys.stderr, flush=True)

    def runs_of(t: int, estimates: dict[str, float]) -> list[RunJob]:
        out = output / "runs"
        return [
            RunJob(t, m, seed, rows[t], str(device), out / f"{tasks[t].name}-{m}-seed{seed}", weight=estimates[m])
            for seed in seeds
            for m in plan[t]
        ]

    jobs = [
        job
        for t, task in enumerate(tasks)
        if t not in pending
        for job in runs_of(t, set_up_runs(task, plan[t], rows[t], device, len(seeds)))
    ]
    cores, load_start = machine_load()
    # what follows the runs, on one thread: each task's costs and the sweep (measured on 2 cores of an Intel Xeon:
    # 7.7 s for all of the default study, 2.6 s of it the sweep). Not padded for slower machines: the ETA's speed
    # factor scales it with the runs (it was counted twice, and the ETA read 19 % over the study's real time)
    progress = Progress([j.weight for j in jobs], workers, tail_s=2.0 * len(tasks) + (3.0 if sweep else 0.0))
    later_runs = sum(len(plan[t]) * len(seeds) for t in pending)
    progress.line(
        f"mambaout study: {len(jobs) + later_runs} runs in {workers} worker process{'es' if workers != 1 else ''}, "
        f"one thread each ({cores} cores, load {load_start:.1f}); estimated {progress.eta_s() / 60:.1f} min "
        + (
            f"for {len(jobs)} of them (from the timed steps); the {later_runs} runs of "
            f"{' and '.join(tasks[t].name for t in pending)} are timed once it is set up, while these train"
            if pending
            else "(from the timed steps)"
        )
    )

    set_up_done = None if pending else 0.0  # when the last task set up aside was ready (perf_counter)

    def later() -> list[RunJob] | None:
        """The runs of the tasks set up aside that are ready now (None once none is left)."""
        nonlocal set_up_done
        if not pending:
            return None
        ready = []
        for t in list(pending):
            made = tasks[t].ready()
            if made is None:
                continue
            pending.remove(t)
            tasks[t], estimates = made  # this process's copy: the measurements and the report read it
            more = runs_of(t, estimates)
            progress.add([j.weight for j in more])
            jobs.extend(more)
            ready += more
            progress.line(
                f"{tasks[t].name}: set up; its {len(more)} runs join the queue · elapsed "
                f"{progress.elapsed_s() / 60:.1f} min, ETA {progress.eta_s() / 60:.1f} min"
            )
        if ready and not pending:
            set_up_done = time.perf_counter()
        return ready

    def on_done(job: RunJob, out: tuple[dict[str, Any], dict]) -> None:
        r = out[0]
        text = f"{tasks[job.task].name} {job.mixer} seed {job.seed}: {100 * r['accuracy']:.1f} %"
        text += f" in {r['train_seconds']:.0f} s"
        if r.get("converged_at"):
            text += f" (converged at step {r['converged_at']} of {job.budget['steps']})"
        # the ETA's speed compares time per step: a run the stop rule ended early is not a faster machine
        fraction = r["steps"] / job.budget["steps"] if r.get("converged_at") else 1.0
        # a run that started before the set-up aside was done shared the cores with it
        crowded = set_up_done is None or time.perf_counter() - r["train_seconds"] < set_up_done
        progress.done(jobs.index(job), r["train_seconds"], text, fraction, crowded)

    outcomes = run_jobs(
        execute_job,
        tasks,
        list(jobs),
        workers,
        on_done,
        later=later,
        on_start=lambda job: progress.started(jobs.index(job)),
    )
    for set_up in aside.values():  # every worker has loaded it: what stays is the task's own work folder
        Path(set_up.path).unlink(missing_ok=True)
    load_trained = machine_load()[1]
    results: dict[str, Any] = dict(
        meta=dict(
            command=command,
            budget=budget,
            seeds=seeds,
            workers=workers,
            environment=environment(device, threads=1),
        ),
        tasks={},
    )
    progress.line("measuring parameters, MACs, latency and memory (one thread, every mixer in turn)...")
    note = busy_warning(1, "latencies")
    if note:
        progress.line(f"note: {note}")
    with one_thread():
        load_measure = machine_load()[1]
        for t, task in enumerate(tasks):
            mine = [(j, o) for j, o in zip(jobs, outcomes) if j.task == t]
            first = {}
            for j, (_, weights) in mine:
                if j.seed == seeds[0] and weights:
                    first[j.mixer] = task.build_model(j.mixer)
                    first[j.mixer].load_state_dict(weights)
                    first[j.mixer].to(device)
            runs = {m: [r for j, (r, _) in mine if j.mixer == m] for m in plan[t]}
            if hasattr(task, "stream_cost"):
                costs = measure_stream_costs(task, plan[t], runs)
            else:
                costs = measure_costs(task, first, rows[t]["batch_size"], device)
            seq_len, dim = task.mixer_tokens()
            entry = dict(
                config=task.config(),
                budget=rows[t],
                prediction=LongSequenceTest(task.name, seq_len, dim, task.causal).as_dict(),
                mixers={m: summarize(rs, costs[m]) for m, rs in runs.items()},
            )
            entry["verdict"] = task_verdict(entry)
            results["tasks"][task.name] = entry
        if sweep:
            seq_task = next((t for t in tasks if getattr(t, "dim", None)), tasks[0])
            seq_len, dim = seq_task.mixer_tokens()
            progress.line(f"latency sweep at width {dim}...")
            results["sweep"] = latency_sweep(
                dim=dim,
                causal=seq_task.causal,
                device=device,
                seq_lens=sweep if isinstance(sweep, list) else _study_sweep_lens(dim),
                log=False,
            )
        load_end = machine_load()[1]
    results["meta"]["load"] = dict(
        cores=cores, start=load_start, after_training=load_trained, measuring=[load_measure, load_end]
    )
    results["meta"]["wall_seconds"] = time.perf_counter() - start
    (output / "results.json").write_text(json.dumps(results, indent=2, default=str))
    write_report(results, output)
    print(format_table(results))
    return results


def _study_sweep_lens(dim: int) -> list[int]:
    from mambaout.study.sweep import default_seq_lens

    return default_seq_lens(dim, (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8))
