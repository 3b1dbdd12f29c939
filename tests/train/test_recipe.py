"""The recipe: the paper's numbers per model, linear lr scaling, presets, YAML and flags, one-sentence mistakes."""

import pytest
import yaml

from mambaout.cli import main
from mambaout.errors import UserError
from mambaout.train.recipe import Recipe, resolve_recipe

PAPER_DROP_PATH = {
    "mambaout_femto": 0.025,
    "mambaout_kobe": 0.025,
    "mambaout_tiny": 0.2,
    "mambaout_small": 0.4,
    "mambaout_base": 0.6,
}


@pytest.mark.parametrize("model", list(PAPER_DROP_PATH))
def test_imagenet_recipe_is_the_papers_for_each_model(model):
    r = resolve_recipe({"model": model, "data": "/datasets/imagenet"})
    assert r.preset == "imagenet"
    assert r.drop_path == PAPER_DROP_PATH[model]
    assert (r.opt, tuple(r.opt_betas), r.opt_eps, r.weight_decay) == ("adamw", (0.9, 0.999), 1e-8, 0.05)
    assert (r.epochs, r.warmup_epochs, r.warmup_lr, r.min_lr, r.base_lr) == (300, 20, 1e-6, 1e-5, 1e-3)
    assert (r.auto_augment, r.color_jitter, r.reprob) == ("rand-m9-mstd0.5-inc1", 0.4, 0.25)
    assert (r.mixup, r.cutmix, r.mixup_switch_prob, r.smoothing) == (0.8, 1.0, 0.5, 0.1)
    assert r.model_ema is False and r.clip_grad is None and r.input_size == 224


@pytest.mark.parametrize(
    "batch, world, accum, global_batch, lr",
    [(128, 8, 4, 4096, 4e-3), (128, 32, 1, 4096, 4e-3), (256, 4, 1, 1024, 1e-3), (64, 1, 2, 128, 1.25e-4)],
)
def test_lr_scales_with_batch_times_devices_times_accumulation(batch, world, accum, global_batch, lr):
    r = resolve_recipe({"model": "mambaout_tiny", "data": "x", "batch_size": batch, "grad_accum": accum})
    assert r.global_batch(world) == global_batch
    assert r.resolved_lr(world) == pytest.approx(lr, rel=1e-12)


def test_an_explicit_lr_is_not_scaled():
    r = resolve_recipe({"data": "x", "lr": "3e-4", "batch_size": 512})
    assert r.resolved_lr(world_size=8) == 3e-4


def test_no_arguments_is_the_digits_task_and_pretrained_weights_select_finetuning():
    digits = resolve_recipe()
    assert (digits.preset, digits.model, digits.data, digits.input_size) == ("digits", "mambaout_pico", None, 32)
    assert digits.hflip == 0.0
    assert digits.mixup == 0 and digits.auto_augment is None
    ft = resolve_recipe({"model": "mambaout_femto", "data": "my_folder", "pretrained": "femto.pth", "epochs": 30})
    assert (ft.preset, ft.epochs, ft.warmup_epochs, ft.mixup, ft.drop_path) == ("finetune", 30, 5, 0.0, 0.025)
    assert ft.resolved_lr() < resolve_recipe({"data": "x"}).resolved_lr()
    layered = resolve_recipe({"data": "x", "preset": "finetune", "layer_decay": "0.8"})
    assert layered.layer_decay == 0.8


def test_flags_win_over_the_yaml_file_which_wins_over_the_preset(tmp_path):
    config = tmp_path / "x.yaml"
    config.write_text("batch-size: 32\nepochs: 10\nscale: [0.5, 1]\nauto_augment: none\n")
    r = resolve_recipe({"batch_size": "16"}, config)
    assert (r.batch_size, r.epochs, r.scale, r.auto_augment, r.input_size) == (16, 10, (0.5, 1.0), None, 32)


def test_a_saved_config_yaml_resolves_to_the_same_recipe(tmp_path):
    r = resolve_recipe({"model": "mambaout_small", "data": "/d", "grad_accum": 8, "model_ema": True})
    (tmp_path / "config.yaml").write_text(r.to_yaml(world_size=4))
    assert resolve_recipe(config=tmp_path / "config.yaml") == r
    assert yaml.safe_load(r.to_yaml(world_size=4))["derived"]["global_batch"] == 128 * 4 * 8


def test_a_short_run_keeps_one_epoch_of_decay_unless_warmup_is_given():
    assert resolve_recipe({"epochs": 1}).warmup_epochs == 0
    assert resolve_recipe({"data": "x", "epochs": 5}).warmup_epochs == 4
    with pytest.raises(UserError, match=r"warmup_epochs \(5\) must be .* below epochs \(5\)"):
        resolve_recipe({"epochs": 5, "warmup_epochs": 5})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"bach_size": 3}, "unknown recipe key 'bach_size' in the arguments (did you mean 'batch_size'?)"),
        ({"batch_size": "x"}, "recipe key 'batch_size' got 'x', which is not a valid int"),
        ({"data": "x", "batch_size": 7}, "Mixup/CutMix need an even per-device batch; batch_size is 7"),
        ({"amp": "fp8"}, "amp must be one of auto, bf16, fp16, none, got 'fp8'"),
        ({"model": "mambaout_tiniest"}, "unknown model 'mambaout_tiniest'"),
        ({"drop_path": 1.5}, "drop_path must be between 0 and 1, got 1.5"),
        ({"epochs": "none"}, "recipe key 'epochs' cannot be empty"),
    ],
)
def test_recipe_mistakes_are_one_sentence(overrides, message):
    with pytest.raises(UserError) as e:
        resolve_recipe(overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("lr_max: 1\n")
    with pytest.raises(UserError, match="unknown recipe key 'lr_max' in config file .*bad.yaml"):
        resolve_recipe(config=tmp_path / "bad.yaml")


def test_print_config_shows_global_batch_and_scaled_lr_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "8")
    args = ["train", "--model", "mambaout_tiny", "--data", "/datasets/imagenet", "--batch-size", "128"]
    assert main(args + ["--grad-accum", "4", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["derived"] == dict(
        world_size=8, global_batch=4096, lr=0.004, lr_rule="base_lr x global_batch / 1024", device="cpu", amp="none"
    )
    assert printed["drop_path"] == 0.2 and printed["batch_size"] == 128


def test_every_recipe_key_is_a_flag():
    from mambaout.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {a.dest for a in train._actions}
    assert {f for f in Recipe.__dataclass_fields__} <= flags
