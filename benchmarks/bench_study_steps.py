"""A training step of each study model against the same model on the plain layer calls, side by side.

The Gated CNN block and the local conv take two shortcuts the study's small models gain from: the activation reads
g made contiguous (oneDNN's GELU and backward instead of ATen's strided loop), and the depthwise conv leaves out the
taps that only meet padding on maps smaller than the kernel's reach (`depthwise_conv2d`). "plain" is the same model
(a deep copy, the same weights) with both undone: the conv module called on the whole kernel, the activation on the
strided view. A third shortcut is selective copying's: its loss reads the last 4 of 36 positions, and its model
computes the last block's token-wise work, the norm and the head for those alone (`SequenceModel.forward(tokens,
last=)`); "plain" computes all 36 and slices too, and "every position" is the model with that shortcut alone undone.
Each round times one step of each (AdamW, the task's loss), in turn, the order rotating, on one thread, and the script
prints the median step time of each and the ratios, per task and mixer. The line's model is the temporal model at the
study's size (16 windows of 312 frames, 64-dim embeddings), on random embeddings.

    python benchmarks/bench_study_steps.py                      # every task and mixer, 30 rounds
    python benchmarks/bench_study_steps.py --tasks digits --mixers conv,ssm --rounds 60
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from mambaout.engine.allocator import keep_freed_memory
from mambaout.measure.machine import cpu_name
from mambaout.mixers.local_conv import LocalConv
from mambaout.models.mambaout import GatedCNNBlock
from mambaout.models.sequence import SequenceModel

TASKS = {
    "digits": ("conv", "ssm", "attn"),
    "selective_copying": ("conv", "ssm", "attn_causal"),
    "line": ("conv", "ssm", "attn_causal"),
}


def _plain_block(self: GatedCNNBlock, x: torch.Tensor) -> torch.Tensor:
    shortcut = x
    g, i, c = torch.split(self.fc1(self.norm(x)), self.split_indices, dim=-1)
    c = self.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) if hasattr(self, "conv") else self.mixer(c)
    x = self.fc2(self.act(g) * torch.cat((i, c), dim=-1))
    return self.drop_path(self.ls(x)) + shortcut


def _plain_conv(self: LocalConv, x: torch.Tensor, state: torch.Tensor | None = None):
    if state is not None or self.layout != "2d":
        return LocalConv.forward(self, x, state)
    w = self.conv.weight * self.mask if self.causal else self.conv.weight
    y = F.conv2d(x.permute(0, 3, 1, 2), w, self.conv.bias, padding=self.kernel_size // 2, groups=self.conv.groups)
    return y.permute(0, 2, 3, 1)


def _every_position(self: SequenceModel, tokens: torch.Tensor, last: int | None = None) -> torch.Tensor:
    logits = SequenceModel.forward(self, tokens)
    return logits if last is None else logits[:, -last:]


def every_position(model: SequenceModel) -> SequenceModel:
    """A deep copy of `model` that computes the logits of every position, then keeps the last `last`."""
    model = copy.deepcopy(model)
    model.forward = _every_position.__get__(model)
    return model


def plain(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `model` whose blocks and local convs run the plain layer calls (a sequence model computing every
    position)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, SequenceModel):
            m.forward = _every_position.__get__(m)
        elif isinstance(m, GatedCNNBlock):
            m.forward = _plain_block.__get__(m)
        elif isinstance(m, LocalConv):
            m.forward = _plain_conv.__get__(m)
    return model


def _setup(task_name: str, mixer: str, steps: int):
    """(model, [(inputs, targets)] * steps, loss(model, inputs, targets))."""
    torch.manual_seed(0)
    if task_name == "line":
        from mambaout.anomaly.config import AnomalyConfig
        from mambaout.anomaly.temporal import TemporalModel, code_loss
        from mambaout.anomaly.train import temporal_args

        cfg = AnomalyConfig(mixer=mixer)
        model = TemporalModel(**temporal_args(cfg, embed_dim=64))  # the detector's own model for these settings
        frames = cfg.burn_in + cfg.seq_len
        x, codes = torch.randn(cfg.batch_size, frames, 64), torch.randint(0, cfg.codes, (cfg.batch_size, frames))
        return model, [(x, codes)] * steps, lambda m, x, y: code_loss(m(x), y, m.horizons, cfg.burn_in)
    from mambaout.study.runner import build_tasks, resolve_budget

    task = build_tasks([task_name])[0]
    batch = resolve_budget(task, "default")["batch_size"]
    batches = list(task.train_batches(steps, batch, torch.Generator().manual_seed(0)))
    return task.build_model(mixer), batches, task.loss


def compare(task_name: str, mixer: str, rounds: int = 30) -> dict[str, float]:
    """Median step time (ms) of the model, of its plain copy and (a sequence model) of its every-position copy, one
    step of each per round, the order rotating."""
    model, batches, loss_fn = _setup(task_name, mixer, rounds + 2)
    models = {"model": model, "plain": plain(model)}
    if isinstance(model, SequenceModel):
        models["every position"] = every_position(model)
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}

    def step(name: str, x: torch.Tensor, y: torch.Tensor) -> float:
        start = time.process_time()
        loss = loss_fn(models[name], x, y)
        optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[name].step()
        return time.process_time() - start

    times: dict[str, list[float]] = {k: [] for k in models}
    for r, (x, y) in enumerate(batches):
        names = list(models)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds = step(name, x, y)
            if r >= 2:  # two untimed rounds first
                times[name].append(seconds)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: " + ", ".join(TASKS))
    parser.add_argument("--mixers", default=None, help="comma-separated; default: each task's study mixers")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the study's runs, which also keep freed memory mapped
    keep_freed_memory()
    print(f"{cpu_name()}; one thread; median of {args.rounds} rounds")
    for task_name in args.tasks.split(","):
        for mixer in args.mixers.split(",") if args.mixers else TASKS[task_name]:
            ms = compare(task_name, mixer, args.rounds)
            row = f"{task_name:18s} {mixer:12s} step {ms['model']:7.1f} ms  plain {ms['plain']:7.1f} ms "
            row += f"{ms['model'] / ms['plain']:.3f}x"
            if "every position" in ms:
                row += f"  every position {ms['every position']:7.1f} ms {ms['model'] / ms['every position']:.3f}x"
            print(row)


if __name__ == "__main__":
    main()
