"""The built-in default: `mambaout train` learns the digits and leaves a run folder that eval and plot can read."""

import json

import yaml

from mambaout.cli import main
from mambaout.engine.records import SUMMARY_COLUMNS, read_summary


def test_default_recipe_learns_digits_and_leaves_a_complete_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--train-images", "384", "--output", str(run), "--plot"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("training mambaout_pico (0.32M params) on digits: 384 train / 360 val images, 10 classes")
    assert [line.split()[:2] for line in out[1:3]] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert out[3].startswith("done in ") and f"results in {run}/" in out[3]

    rows = read_summary(run)
    assert [r["epoch"] for r in rows] == [1, 2] and list(rows[0]) == SUMMARY_COLUMNS
    assert rows[-1]["top1"] > 50.0  # chance is 10 %
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and rows[-1]["images_per_s"] > 0
    assert rows[-1]["lr"] == 1e-5  # the cosine ends at min_lr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["preset"], config["model"], config["derived"]["global_batch"]) == ("digits", "mambaout_pico", 64)
    assert (run / "classes.txt").read_text().split() == [str(d) for d in range(10)]
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "curves.png").stat().st_size > 10_000

    # The exported weights score exactly what training reported for the best epoch.
    best = max(rows, key=lambda r: r["top1"])
    assert main(["eval", "--pretrained", str(run / "best.safetensors"), "--output", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert (result["model"], result["images"], result["input_size"]) == ("mambaout_pico", 360, [3, 32, 32])
    assert abs(result["top1"] - best["top1"]) < 1e-3 and abs(result["top5"] - best["top5"]) < 1e-3
    assert "top-1" in capsys.readouterr().out


def test_plot_and_eval_mistakes_are_one_sentence(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert f"{tmp_path} has no summary.csv" in capsys.readouterr().err
    (tmp_path / "w.safetensors").write_bytes(b"")
    assert main(["eval", "--pretrained", str(tmp_path / "w.safetensors")]) == 2
    assert "give --model" in capsys.readouterr().err
