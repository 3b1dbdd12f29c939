"""The training driver: a task trains, resumes exactly after a kill, keeps an in-memory run off the disk, and a
diverging loss stops with one sentence."""

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import mambaout
import mambaout.engine.run as engine_run
from mambaout.engine.checkpoint import load_checkpoint
from mambaout.engine.records import read_summary
from mambaout.engine.run import OptimizerSpec, RunConfig, ScheduleSpec, Task, run
from mambaout.errors import UserError


class Regression(Task):
    """y = 3x + 1 with noise-free targets, through a dropout layer so that the generators matter."""

    optimizer = OptimizerSpec("adamw", lr=0.05, weight_decay=0.0)
    schedule = ScheduleSpec(warmup=2)
    best = "neg_mse"

    def __init__(self, nan_at: int | None = None):
        self.nan_at, self.calls = nan_at, 0

    def model(self):
        return nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Dropout(0.05), nn.Linear(32, 1))

    def train_data(self):
        x = torch.linspace(-1, 1, 40)[:, None]
        return TensorDataset(x, 3 * x + 1)

    def loss(self, forward, batch):
        self.calls += 1
        x, y = batch
        loss = (forward(x) - y).pow(2).mean()
        return loss * math.nan if self.nan_at is not None and self.calls >= self.nan_at else loss

    def evaluate(self, model, runtime):
        x = torch.linspace(-1, 1, 40)[:, None]
        y = 3 * x + 1
        model.eval()
        with torch.no_grad():
            mse = (model(x) - y).pow(2).mean().item()
        model.train()
        return dict(neg_mse=-mse)


def config(output=None, **overrides) -> RunConfig:
    # 40 samples / batch 8 = 5 updates an epoch, 4 epochs
    values = dict(epochs=4, batch_size=8, device="cpu", amp="none", seed=3, output=output, checkpoint_every=3)
    return RunConfig(**{**values, **overrides})


def test_a_task_trains_and_reports_losses_metrics_and_its_best_evaluation(tmp_path):
    result = run(Regression(), config(tmp_path / "run"))
    assert result.steps == len(result.losses) == 20
    assert result.final_loss < 0.2 * sum(result.losses[:3]) / 3
    rows = read_summary(tmp_path / "run")  # one row per epoch, 6 significant digits
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert list(rows[0]) == ["epoch", "train_loss", "neg_mse", "lr", "images_per_s", "epoch_s"]
    assert result.metrics["neg_mse"] == pytest.approx(rows[-1]["neg_mse"], rel=1e-5)  # the last evaluation
    best = max(rows, key=lambda r: r["neg_mse"])
    assert result.best["value"] == pytest.approx(best["neg_mse"], rel=1e-5) and result.best["epoch"] == best["epoch"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == result.metrics
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert files == {"config.yaml", "log.jsonl", "summary.csv", "metrics.json", "last.pt"}


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_and_log(tmp_path, monkeypatch):
    straight = run(Regression(), config(tmp_path / "straight"))

    real, saved = engine_run.save_checkpoint, []

    def save_then_die(path, state):
        real(path, state)
        saved.append((state["epoch"], state["updates_done"], state["global_step"]))
        if len(saved) == 3:  # update 3, end of epoch 1 (update 5), update 6: killed mid-epoch 2
            raise KeyboardInterrupt

    monkeypatch.setattr(engine_run, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(Regression(), config(tmp_path / "resumed"))
    assert saved == [(0, 3, 3), (1, 0, 5), (1, 1, 6)]
    monkeypatch.undo()

    with pytest.raises(UserError, match="already holds a run; continue it with --resume"):
        run(Regression(), config(tmp_path / "resumed"))
    resumed = run(Regression(), config(tmp_path / "resumed", resume=True))
    assert resumed.steps == 20 and len(resumed.losses) == 14
    for k, v in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    assert resumed.losses == straight.losses[6:]

    def log(run_dir):
        return [{k: v for k, v in r.items() if k != "time"} for r in map(json.loads, open(run_dir / "log.jsonl"))]

    assert log(tmp_path / "resumed") == log(tmp_path / "straight")
    assert read_summary(tmp_path / "resumed")[-1]["neg_mse"] == read_summary(tmp_path / "straight")[-1]["neg_mse"]


def test_an_in_memory_run_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(Regression(), config(None, tensorboard=True))
    assert result.run_dir is None and result.steps == 20 and "neg_mse" in result.metrics
    assert list(tmp_path.iterdir()) == []


def test_a_stream_of_batches_trains_for_the_given_updates(tmp_path):
    class Stream(Regression):
        def train_data(self):
            x = torch.linspace(-1, 1, 40)[:, None]
            while True:
                yield x, 3 * x + 1

    result = run(Stream(), config(None, epochs=None, updates=30, eval_every=0, eval_unit="update"))
    assert result.steps == len(result.losses) == 30 and result.final_loss < 0.3 * result.losses[0]
    assert result.metrics["neg_mse"] > -0.5  # evaluated once, at the end


def _first_converged(losses, window, threshold):
    """The update at which a mean over `window` losses first reaches `threshold` (1-based), else None."""
    for k in range(window, len(losses) + 1):
        if sum(losses[k - window : k]) / window <= threshold:
            return k
    return None


def _threshold_near(losses, window, update):
    """A threshold the window mean first reaches at or before `update`: the mean of the window that ends there."""
    return sum(losses[update - window : update]) / window


@pytest.mark.parametrize("near", [10, 12], ids=["at-an-epoch-end", "mid-epoch"])
def test_the_stop_rule_ends_a_converged_run_as_the_full_run_was_at_that_update_evaluated_and_checkpointed(
    tmp_path, near
):
    straight = run(Regression(), config(None))
    threshold = _threshold_near(straight.losses, 4, near)
    k = _first_converged(straight.losses, 4, threshold)
    assert k == near  # the loss falls steadily over epochs 2-3 (5 updates an epoch)

    stopped = run(Regression(), config(tmp_path / "run", stop_loss=threshold, stop_window=4))
    assert stopped.converged_at == stopped.steps == k and stopped.losses == straight.losses[:k]
    assert "neg_mse" in stopped.metrics  # evaluated where it stopped
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["global_step"] == k and last["converged_at"] == k
    records = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert records[-1]["step"] == k and [r["step"] for r in records if r.get("converged")] == [k]
    assert [r["epoch"] for r in read_summary(tmp_path / "run")] == [1, 2]  # a row per finished epoch

    again = run(Regression(), config(tmp_path / "run", stop_loss=threshold, stop_window=4, resume=True))
    assert again.steps == k and again.losses == [] and again.converged_at == k  # nothing left to train
    for name, v in stopped.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], v), name

    assert run(Regression(), config(None)).converged_at is None  # no rule: the whole length
    assert run(Regression(), config(None, stop_loss=0.0, stop_window=4)).steps == 20  # never reached
    with pytest.raises(UserError, match="over stop_window updates; give at least 1, got 0"):
        run(Regression(), config(None, stop_loss=0.1, stop_window=0))


def test_a_run_with_the_stop_rule_killed_before_it_converged_resumes_and_stops_at_the_same_update(
    tmp_path, monkeypatch
):
    straight = run(Regression(), config(None))
    threshold = _threshold_near(straight.losses, 8, 12)
    rule = dict(stop_loss=threshold, stop_window=8)
    uninterrupted = run(Regression(), config(tmp_path / "straight", **rule))

    real, saved = engine_run.save_checkpoint, []

    def save_then_die(path, state):
        real(path, state)
        saved.append(state["global_step"])
        if len(saved) == 3:  # updates 3, 5 (end of epoch 1), 6: killed with 6 losses of the window in the checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(engine_run, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(Regression(), config(tmp_path / "resumed", **rule))
    monkeypatch.undo()
    resumed = run(Regression(), config(tmp_path / "resumed", resume=True, **rule))
    assert resumed.converged_at == uninterrupted.converged_at == resumed.steps == 12
    for name, v in uninterrupted.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], v), name


def test_a_stream_of_batches_stops_where_its_loss_converged():
    class Stream(Regression):
        def train_data(self):
            x = torch.linspace(-1, 1, 40)[:, None]
            while True:
                yield x, 3 * x + 1

    values = dict(epochs=None, updates=60, eval_every=0, eval_unit="update")
    straight = run(Stream(), config(None, **values))
    threshold = _threshold_near(straight.losses, 10, 30)
    k = _first_converged(straight.losses, 10, threshold)
    stopped = run(Stream(), config(None, stop_loss=threshold, stop_window=10, **values))
    assert stopped.steps == stopped.converged_at == k <= 30 and stopped.losses == straight.losses[:k]
    assert stopped.metrics["neg_mse"] > -0.5  # evaluated once, where it stopped


def test_a_diverging_loss_stops_with_one_sentence_naming_the_update_and_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(UserError) as e:
        run(Regression(nan_at=4), config(run_dir))
    assert str(e.value) == (
        f"the loss became nan at epoch 1, update 4: training stopped and the last good checkpoint {run_dir}/last.pt "
        "is kept; lower the learning rate or set a gradient clip, then resume the run"
    )
    last = load_checkpoint(run_dir / "last.pt")
    assert last["global_step"] == 3 and all(torch.isfinite(v).all() for v in last["model"].values())


def test_a_second_stage_in_the_same_folder_starts_afresh_and_resumes_only_its_own_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    first = run(Regression(), config(run_dir, stage="first", epochs=1))
    assert load_checkpoint(run_dir / "last.pt")["stage"] == "first"
    second = run(Regression(), config(run_dir, stage="second", epochs=2, resume=True))  # first's last.pt: not ours
    assert second.steps == len(second.losses) == 10 and first.steps == 5
    again = run(Regression(), config(run_dir, stage="second", epochs=3, resume=True))  # ours: two more epochs... one
    assert again.steps == 15 and len(again.losses) == 5


def test_the_optimizer_spec_keeps_weight_decay_off_biases_norms_and_named_parameters():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    optimizer = OptimizerSpec("adamw", lr=1e-3, weight_decay=0.05, no_decay=("2.weight",)).build(model)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    named = {n: decay[id(p)] for n, p in model.named_parameters()}
    assert named == {"0.weight": 0.05, "0.bias": 0.0, "1.weight": 0.0, "1.bias": 0.0, "2.weight": 0.0, "2.bias": 0.0}
    # with layer decay (timm's group_matcher): the stem learns at 0.8^7 of the head's rate, the named one without decay
    model = mambaout.create_model("mambaout_pico", num_classes=3)
    spec = OptimizerSpec("adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.8, no_decay=("stem.conv1.weight",))
    groups = {id(p): g for g in spec.build(model).param_groups for p in g["params"]}
    named = {n: (groups[id(p)]["weight_decay"], groups[id(p)]["lr_scale"]) for n, p in model.named_parameters()}
    assert named["stem.conv1.weight"] == (0.0, pytest.approx(0.8**7))
    assert named["stem.conv2.weight"] == (0.05, pytest.approx(0.8**7)) and named["head.fc.weight"] == (0.05, 1.0)
    with pytest.raises(UserError, match="optimizer 'adamx' could not be created"):
        OptimizerSpec("adamx").build(model)
