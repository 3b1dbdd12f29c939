"""`run(task, config)`: how every model in this project is trained.

A pipeline is a `Task`: it says what to train (`model()`), on what (`train_data()`: a map-style dataset, read in
epochs, or an iterable of batches), towards what (`loss(forward, batch)`), with which optimizer and schedule
(`OptimizerSpec`, `ScheduleSpec`) and how to score it (`evaluate(model, runtime)`). A `RunConfig` says how long,
how big a batch, where (device, precision) and where to keep the results. This file does everything else, the same
for classification, detection, segmentation, the study's runs and the line detector's stages:

1. the runtime (`runtime.py`: processes, device, amp) and the seeds; the task's model; the timm optimizer and the
   per-update schedule; DDP; `TrainParts`;
2. resume: a run folder's `last.pt` of the same stage continues exactly where it stopped, also in the middle of an
   epoch (`fit.py`, `checkpoint.py`); a new run refuses a folder that holds one;
3. the loop (`fit` over epochs of a dataset, `train_updates` over a stream of batches), the evaluation cadence,
   checkpoints, console progress and the run folder;
4. the one divergence message: a non-finite loss stops the run with a sentence saying the update, the last good
   checkpoint and what to change;
5. the convergence stop (`RunConfig.stop_loss`): a run whose mean training loss over the last `stop_window` updates
   falls to `stop_loss` ends there, evaluated and checkpointed as at its last update. The schedule keeps the
   planned length, so a stopped run is exactly the first updates of the full one; its checkpoint says it converged
   (a resume trains nothing more) and a checkpoint before that carries the loss window (a resume stops where the
   uninterrupted run would).

The run folder (`config.output`; None keeps the run in memory and writes nothing):

    config.yaml    the resolved configuration the task records, with `derived:` (world size, precision, updates)
    log.jsonl      one line per logged update (step, epoch, loss and its terms, lr) and per evaluation (scalars)
    summary.csv    one row per evaluation at the end of an epoch (epoch, train_loss, metrics, lr, images_per_s,
                   epoch_s), the lines the console prints
    metrics.json   the last evaluation
    last.pt        everything a resume needs, atomically, at the checkpoint cadence and at the end (a dataset's
                   runs only: a stream of batches cannot say where it was)
    tensorboard/   loss and lr per update and the summary rows (with `config.tensorboard`)

Example (a regression in 20 lines):
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from mambaout.engine.run import OptimizerSpec, RunConfig, Task, run
    >>> class Line(Task):
    ...     optimizer = OptimizerSpec("adamw", lr=0.1, weight_decay=0.0)
    ...     def model(self):
    ...         return torch.nn.Linear(1, 1)
    ...     def train_data(self):
    ...         x = torch.linspace(-1, 1, 64)[:, None]
    ...         return TensorDataset(x, 3 * x + 1)
    ...     def loss(self, forward, batch):
    ...         x, y = batch
    ...         return (forward(x) - y).pow(2).mean()
    >>> result = run(Line(), RunConfig(updates=200, batch_size=16, device="cpu", amp="none", progress="none"))
    >>> round(result.model.weight.item(), 1), round(result.model.bias.item(), 1)
    (3.0, 1.0)
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from mambaout.engine.checkpoint import load_checkpoint, save_checkpoint
from mambaout.engine.config import to_yaml
from mambaout.engine.fit import Progress, fit, restore_training_state, training_state
from mambaout.engine.loop import TrainingDiverged, TrainParts, train_updates
from mambaout.engine.records import RunLog, RunRecords, write_json
from mambaout.engine.runtime import Runtime, seed_all, setup_runtime
from mambaout.engine.schedule import cosine_per_update, with_warmup
from mambaout.errors import UserError


# -- what a task declares -------------------------------------------------------------------------------------------
@dataclass
class OptimizerSpec:
    """A timm optimizer (`create_optimizer_v2`): weight decay off for 1-D parameters and the model's
    `no_weight_decay()` names (and `no_decay`), optional layer decay through the model's `group_matcher`."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    layer_decay: float | None = None
    no_decay: tuple[str, ...] = ()  # further parameter names without weight decay
    kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. betas, eps

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        params, layer_decay = model, self.layer_decay
        if self.no_decay:  # timm's own grouping, with the further names
            skip = set(getattr(model, "no_weight_decay", set)()) | set(self.no_decay)
            if layer_decay is None:
                params = param_groups_weight_decay(model, self.weight_decay, no_weight_decay_list=skip)
            else:
                params = param_groups_layer_decay(model, self.weight_decay, skip, layer_decay=layer_decay)
                layer_decay = None  # already in the groups
        try:
            return create_optimizer_v2(
                params,
                opt=self.name,
                lr=self.lr,
                weight_decay=self.weight_decay,
                layer_decay=layer_decay,
                **self.kwargs,
            )
        except (AssertionError, ValueError) as e:
            raise UserError(f"optimizer {self.name!r} could not be created ({e}); use a timm name such as adamw") from e


@dataclass
class ScheduleSpec:
    """The learning rate per update: timm's cosine with a linear warm-up from `warmup_lr` down to `min_lr` (None: 1 %
    of the peak), its length and warm-up counted in `unit`s ("update" or "epoch"); or, with `decay`, a torch scheduler
    `decay(optimizer, updates_per_epoch)` after mmcv's linear warm-up from `warmup_ratio` x lr over `warmup` updates
    (the dense recipes' multi-step and poly decays)."""

    warmup: int = 0
    warmup_lr: float = 1e-6
    min_lr: float | None = None
    unit: str = "update"
    decay: Callable[[torch.optim.Optimizer, int], Any] | None = None
    warmup_ratio: float = 1e-3

    def build(self, optimizer: torch.optim.Optimizer, total: int, per_epoch: int) -> tuple[Any, Callable[[int], None]]:
        """(scheduler, step(global_step)) for a run of `total` updates of which `per_epoch` make an epoch."""
        if self.decay is not None:
            scheduler = with_warmup(optimizer, self.decay(optimizer, per_epoch), self.warmup, self.warmup_ratio)
            return scheduler, lambda step: scheduler.step()
        min_lr = self.min_lr if self.min_lr is not None else max(g["lr"] for g in optimizer.param_groups) * 1e-2
        if self.unit == "epoch":
            length = math.ceil(total / per_epoch)
            scheduler = cosine_per_update(optimizer, length, self.warmup, self.warmup_lr, min_lr, per_epoch)
        else:
            scheduler = cosine_per_update(optimizer, total, self.warmup, self.warmup_lr, min_lr)
        return scheduler, lambda step: scheduler.step_update(num_updates=step)


class Task(Protocol):
    """What a pipeline supplies to `run`. Subclass it: `model`, `train_data` and `loss` are required, the rest has
    defaults (AdamW, a cosine per update, no evaluation, nothing extra in checkpoints)."""

    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    best: str | None = None  # the metric whose highest value marks the best evaluation (e.g. "top1")
    advice: str = "lower the learning rate or set a gradient clip, then resume the run"  # after a divergence
    collate: Callable | None = None  # the training loader's collate_fn

    def model(self) -> nn.Module:
        """The module to train (built after every generator is seeded from the run's seed)."""
        ...

    def train_data(self) -> Dataset | Iterable[Any]:
        """A map-style dataset (read in seeded epochs, resumable mid-epoch) or an iterable of batches."""
        ...

    def loss(self, forward: nn.Module, batch: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        """The loss of one batch (the task moves it to the device), or loss terms whose sum is minimised."""
        ...

    def evaluate(self, model: nn.Module, runtime: Runtime) -> dict[str, Any] | None:
        """Metrics of `model` (every process calls it; None: the task does not evaluate)."""
        return None

    def config(self, runtime: Runtime) -> Any:
        """The resolved configuration recorded as config.yaml: a dataclass, a dict or finished YAML text."""
        return {}

    def checkpoint_extra(self) -> dict[str, Any]:
        """Values kept in every last.pt beside the training state (what a reader needs to rebuild the model)."""
        return {}

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Called with the last.pt a run resumes from, before the model is built (check it, read extras back)."""

    def on_start(self, run: RunState) -> None:
        """Called once the run is set up (print its first line, write files of its own)."""

    def on_update(self, run: RunState, loss: float) -> None:
        """Called after every update."""

    def on_evaluation(self, run: RunState, metrics: dict[str, Any], improved: bool) -> None:
        """Called after each evaluation, before the checkpoint that follows it (e.g. export weights)."""

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        """The metrics part of a summary line on the console."""
        return "  ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))


@dataclass
class RunConfig:
    """How a task is trained. `updates` and `epochs` (of the dataset) bound the run; with both, the shorter wins."""

    updates: int | None = None
    epochs: int | None = None
    batch_size: int = 32  # per process
    grad_accum: int = 1
    clip_grad: float | None = None
    ema: float | None = None  # decay of a timm ModelEmaV3, evaluated beside the model as ema_<best>
    device: str | None = "auto"
    amp: str = "auto"  # auto, bf16, fp16, none (runtime.py)
    runtime: Runtime | None = None  # an existing one (its device and amp win)
    compile: bool = False
    workers: int = 0
    seed: int = 0
    output: str | Path | None = None  # the run folder; None: in memory, no file written
    stage: str | None = None  # a run of several stages in one folder resumes only its own last.pt
    resume: bool = False  # continue the stage's last.pt in `output` if there is one
    overwrite: bool = False  # a fresh run replaces the stage's last.pt instead of refusing the folder
    checkpoint_every: int = 0  # updates between checkpoints (0: only at epoch ends and at the end)
    checkpoint_epochs: bool = True  # a checkpoint at the end of every epoch
    eval_every: int = 1  # evaluations every that many `eval_unit`s; 0: only at the end; -1: never
    eval_unit: str = "epoch"
    log_every: int = 0  # updates between log lines (0: a tenth of the run); the first and the last are logged
    progress: str = "lines"  # the console during training: "lines" (the log lines), "bar" (tqdm) or "none"
    desc: str = ""  # the bar's label / the lines' prefix
    tensorboard: bool = False
    stop_loss: float | None = None  # end the run once the mean loss of the last `stop_window` updates is this or less
    stop_window: int = 50


@dataclass
class RunState:
    """Where a run is; the task's hooks read it."""

    runtime: Runtime
    model: nn.Module
    parts: TrainParts
    run_dir: Path | None
    total_updates: int
    updates_per_epoch: int | None  # None: a stream of batches
    progress: Progress
    resumed: bool
    ema: nn.Module | None = None
    best: dict[str, Any] = field(default_factory=lambda: dict(value=-math.inf, epoch=0, step=0))
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def lr(self) -> float:
        return max(g["lr"] for g in self.parts.optimizer.param_groups)  # layer decay scales the others down

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_updates / self.updates_per_epoch) if self.updates_per_epoch else 0


@dataclass
class RunResult:
    model: nn.Module
    losses: list[float]  # per update of this call (a resumed run: from where it resumed)
    metrics: dict[str, Any]  # the last evaluation
    seconds: float
    run_dir: Path | None
    steps: int  # updates done in all, also before a resume
    best: dict[str, Any] = field(default_factory=dict)  # value, epoch, step of the best evaluation (Task.best)
    ema: nn.Module | None = None
    converged_at: int | None = None  # the update at which `RunConfig.stop_loss` ended the run; None: it ran its length

    @property
    def final_loss(self) -> float:
        """The mean loss over the last tenth of the updates."""
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return sum(tail) / len(tail) if tail else math.nan


# -- the driver ----------------------------------------------------------------------------------------------------
def run(task: Task, config: RunConfig) -> RunResult:
    """Train `task` as `config` says; see the module docstring for what it owns and writes.

    Example:
        >>> result = run(MyTask(), RunConfig(epochs=2, batch_size=8, output="runs/x"))  # doctest: +SKIP
        >>> run(MyTask(), RunConfig(epochs=4, batch_size=8, output="runs/x", resume=True))  # two more  # doctest: +SKIP
    """
    started = time.perf_counter()
    if config.stop_loss is not None and config.stop_window < 1:
        raise UserError(
            f"the stop rule averages the loss over stop_window updates; give at least 1, got {config.stop_window}"
        )
    rt = config.runtime or setup_runtime(config.device, config.amp)
    run_dir = Path(config.output) if config.output is not None else None
    checkpoint = _checkpoint_to_resume(run_dir, config)
    if checkpoint is not None:
        task.restore(checkpoint)

    data = task.train_data()
    loader, per_epoch = None, None
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        loader = rt.train_loader(data, config.batch_size, config.seed, config.workers, collate_fn=task.collate)
        per_epoch = len(loader) // config.grad_accum
        if per_epoch == 0:
            raise UserError(
                f"the {len(data)} training samples do not fill one batch of "
                f"{config.batch_size * rt.world_size * config.grad_accum}; lower the batch size"
            )
    total = _total_updates(config, per_epoch)

    seed_all(config.seed)  # identical initial weights in every process and every run
    model = task.model().to(rt.device)
    optimizer = task.optimizer.build(model)
    scheduler, schedule = task.schedule.build(optimizer, total, per_epoch or 1)
    ema = ModelEmaV3(model, decay=config.ema) if config.ema else None
    parts = TrainParts(
        model=model,
        forward=rt.wrap(model, compile=config.compile),
        optimizer=optimizer,
        loss=task.loss,
        schedule=schedule,
        scaler=rt.grad_scaler() if rt.amp == torch.float16 else None,
        amp_dtype=rt.amp,
        device=rt.device,
        grad_accum=config.grad_accum,
        ema=ema,
        clip_grad=config.clip_grad,
        world_size=rt.world_size,
    )
    progress = Progress()
    state = RunState(rt, model, parts, run_dir, total, per_epoch, progress, checkpoint is not None, ema)
    if checkpoint is not None:
        state.progress = restore_training_state(parts, scheduler, checkpoint)
        state.best = checkpoint.get("best") or state.best
    main = rt.is_main and run_dir is not None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        derived = dict(world_size=rt.world_size, device=str(rt.device), precision=rt.precision, updates=total)
        recorded = task.config(rt)
        text = recorded if isinstance(recorded, str) else to_yaml(recorded, derived=derived)
        (run_dir / "config.yaml").write_text(text)
    driver = _Driver(task, config, state, scheduler, main, checkpoint)
    task.on_start(state)
    try:
        if driver.converged_at is not None:
            pass  # resumed from the checkpoint of a run the stop rule had ended: nothing left to train
        elif loader is not None:
            fit(
                parts,
                loader,
                total,
                per_epoch,
                config.seed,
                rt.rank,
                state.progress,
                driver.after_update,
                driver.after_epoch,
            )
        else:
            step, stats = train_updates(parts, iter(data), total - state.progress.global_step, on_update=driver.stream)
    except _Converged:
        pass
    except TrainingDiverged as e:
        raise UserError(driver.diverged(e)) from None
    finally:
        driver.close()
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)
    return RunResult(
        model,
        driver.losses,
        state.metrics,
        time.perf_counter() - started,
        run_dir,
        state.progress.global_step,
        state.best if task.best else {},
        ema.module if ema is not None else None,
        driver.converged_at,
    )


def _checkpoint_to_resume(run_dir: Path | None, config: RunConfig) -> dict[str, Any] | None:
    """The stage's last.pt to continue, None for a fresh start; a fresh run refuses a folder holding this stage's."""
    if run_dir is None or not (run_dir / "last.pt").is_file():
        return None
    if config.overwrite and not config.resume:
        return None
    if config.stage is not None or config.resume:
        checkpoint = load_checkpoint(run_dir / "last.pt")
        if checkpoint.get("stage") != config.stage:
            return None  # another stage's: this one starts afresh and replaces it
        if config.resume:
            return checkpoint
    raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --output")


def _total_updates(config: RunConfig, per_epoch: int | None) -> int:
    bounds = [config.updates] if config.updates else []
    if config.epochs:
        if per_epoch is None:
            raise UserError("a run over a stream of batches counts updates, not epochs; give RunConfig.updates")
        bounds.append(config.epochs * per_epoch)
    if not bounds:
        raise UserError("a run needs a length: give RunConfig.updates or RunConfig.epochs")
    return min(bounds)


def every(interval: int, count: int, last: bool) -> bool:
    """An interval schedule: `interval` > 0 every that many, 0 only at the last, -1 never."""
    if interval < 0:
        return False
    return last or (interval > 0 and count % interval == 0)


class _Converged(Exception):
    """Raised by the driver after the update at which the stop rule fired, to leave the loops (caught in `run`)."""


class _Driver:
    """The callbacks of one run: logs, evaluations, checkpoints, the console, the stop rule."""

    def __init__(
        self,
        task: Task,
        config: RunConfig,
        state: RunState,
        scheduler: Any,
        main: bool,
        checkpoint: dict[str, Any] | None = None,
    ):
        self.task, self.config, self.state, self.scheduler, self.main = task, config, state, scheduler, main
        rt, p = state.runtime, state.progress
        self.rt, self.losses, self.start = rt, [], time.perf_counter()
        checkpoint = checkpoint or {}
        self.window = deque(checkpoint.get("stop_window_losses") or (), maxlen=config.stop_window)
        # a run the rule ended stays ended on resume; without the rule a resume trains on to the planned length
        self.converged_at: int | None = checkpoint.get("converged_at") if config.stop_loss is not None else None
        self.log = RunLog(state.run_dir, main, p.global_step, stage=config.stage)
        self.records = RunRecords(state.run_dir, main, config.tensorboard, p.epoch, p.global_step)
        self.log_every = config.log_every or max(1, state.total_updates // 10)
        self.evaluates = getattr(type(task), "evaluate", Task.evaluate) is not Task.evaluate
        self.bar = None
        if config.progress == "bar" and rt.is_main:
            self.bar = tqdm(
                total=state.total_updates,
                initial=p.global_step,
                desc=config.desc,
                unit="update",
                leave=False,
                file=sys.stderr,
                mininterval=1.0,
                dynamic_ncols=True,
                disable=None,  # None: only on a terminal
            )

    # - per update -
    def stream(self, step: int, loss: float, terms: dict[str, float], stats: Any) -> None:
        self.state.progress.global_step, self.state.progress.stats = step, stats
        self.update(loss, terms, mid_epoch=True)

    def after_update(self, p: Progress, loss: float, terms: dict[str, float]) -> None:
        self.update(loss, terms, mid_epoch=p.updates_done < self.state.updates_per_epoch)

    def update(self, loss: float, terms: dict[str, float], mid_epoch: bool) -> None:
        state, config, p = self.state, self.config, self.state.progress
        self.losses.append(loss)
        self.check_converged(loss, p.global_step)
        step, last = p.global_step, p.global_step == state.total_updates or self.converged_at is not None
        self.records.step(step, loss, state.lr)
        if step == 1 or step % self.log_every == 0 or last:
            self.log_update(step, loss, terms)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss {loss:.4f} lr {state.lr:.2e}", refresh=False)
        self.task.on_update(state, loss)
        if self.evaluates:
            if config.eval_unit == "update" and every(config.eval_every, step, last):
                self.evaluate(row=False)
            elif config.eval_unit == "epoch" and mid_epoch and last and config.eval_every >= 0:
                self.evaluate(row=False)  # a run that ends mid-epoch is evaluated at its end
        if (mid_epoch or not config.checkpoint_epochs) and (
            last or (config.checkpoint_every and step % config.checkpoint_every == 0)
        ):
            self.save(p)
        if self.converged_at is not None and (mid_epoch or state.updates_per_epoch is None):
            raise _Converged  # at an epoch's end `after_epoch` evaluates and checkpoints first

    def check_converged(self, loss: float, step: int) -> None:
        """The stop rule: sets `converged_at` once the window's mean loss is at most `stop_loss`, and says so."""
        self.window.append(loss)
        config = self.config
        if config.stop_loss is None or len(self.window) < self.window.maxlen:
            return
        mean = sum(self.window) / len(self.window)
        if mean <= config.stop_loss:
            self.converged_at = step
            self.log(step=step, converged=True, window_loss=round(mean, 6))
            self.console(
                f"converged at update {step}/{self.state.total_updates}: mean loss {mean:.4g} over the last "
                f"{len(self.window)} updates, at most {config.stop_loss:g}; stopping here"
            )

    def console(self, text: str) -> None:
        """A line on the console when the run prints lines, prefixed with its label."""
        if self.config.progress == "lines":
            self.rt.log(f"{self.config.desc}: {text}" if self.config.desc else text)

    def log_update(self, step: int, loss: float, terms: dict[str, float]) -> None:
        state = self.state
        epoch = state.progress.epoch + 1 if state.updates_per_epoch else None
        record = dict(step=step, epoch=epoch, lr=state.lr, loss=round(loss, 5))
        record.update({k: round(v, 5) for k, v in terms.items()})
        self.log(**{k: v for k, v in record.items() if v is not None})
        where = f"epoch {epoch} " if epoch else ""
        self.console(
            f"{where}update {step}/{state.total_updates}  loss {loss:.4f}  lr {state.lr:.2e}  "
            f"({time.perf_counter() - self.start:.0f} s)"
        )

    # - per epoch -
    def after_epoch(self, p: Progress) -> None:
        config = self.config
        last = p.global_step == self.state.total_updates or self.converged_at is not None
        if self.evaluates and config.eval_unit == "epoch":
            if every(config.eval_every, p.epoch, last):
                self.evaluate(row=True)
        if config.checkpoint_epochs:
            self.save(Progress(p.epoch, 0, p.global_step))
        if self.converged_at is not None:
            raise _Converged

    def evaluate(self, row: bool) -> None:
        state, task, p = self.state, self.task, self.state.progress
        metrics = task.evaluate(state.model, self.rt) or {}
        ema = {}
        if state.ema is not None and task.best:
            ema[f"ema_{task.best}"] = (task.evaluate(state.ema.module, self.rt) or {}).get(task.best)
        value = metrics.get(task.best) if task.best else None
        improved = value is not None and value > state.best["value"]
        if improved:
            state.best = dict(value=value, epoch=p.epoch, step=p.global_step)
        state.metrics = metrics = {**metrics, **ema}
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.log(step=p.global_step, epoch=p.epoch, **scalars)
        if self.main:
            write_json(metrics, state.run_dir / "metrics.json")
        if row:  # the EMA's columns last
            summary = dict(epoch=p.epoch, train_loss=p.stats.loss, **{k: v for k, v in scalars.items() if k not in ema})
            summary.update(lr=state.lr, images_per_s=p.stats.images_per_s, epoch_s=p.stats.seconds)
            summary.update({k: v for k, v in scalars.items() if k in ema})
            self.records.epoch(summary, state.epochs, p.global_step, task.format_metrics(scalars))
        task.on_evaluation(state, metrics, improved)

    # - files -
    def save(self, p: Progress) -> None:
        if self.state.run_dir is None or self.state.updates_per_epoch is None:
            return  # in memory; or a stream of batches, which cannot say where it was
        extra = dict(stage=self.config.stage, best=self.state.best, **self.task.checkpoint_extra())
        if self.config.stop_loss is not None:  # where the stop rule stands, so a resume stops where this run would
            extra.update(stop_window_losses=list(self.window), converged_at=self.converged_at)
        snapshot = training_state(self.state.parts, self.scheduler, p, **extra)  # every process: gathers generators
        if self.main:
            save_checkpoint(self.state.run_dir / "last.pt", snapshot)

    def diverged(self, e: TrainingDiverged) -> str:
        state, stage = self.state, self.config.stage
        where = f"update {e.global_step}"
        if state.updates_per_epoch:
            epoch, update = divmod(e.global_step - 1, state.updates_per_epoch)
            where = f"epoch {epoch + 1}, update {update + 1}"
        last = state.run_dir / "last.pt" if state.run_dir is not None else None
        kept = (
            f"the last good checkpoint {last} is kept"
            if last is not None and last.exists()
            else "no checkpoint had been written yet"
        )
        what = f"the {stage} loss" if stage else "the loss"
        return f"{what} became {e.value} at {where}: training stopped and {kept}; {self.task.advice}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.records.close()
