"""`mambaout analyze`: the paper's long-sequence test reproduces the paper's numbers."""

import json
import os

import pytest

from mambaout.cli import main
from mambaout.study.analyze import LongSequenceTest, analyze, image_tokens
from mambaout.study.sweep import default_seq_lens, latency_sweep


def test_token_counts_of_the_papers_three_tasks():
    assert image_tokens(224, 224, 16) == 196
    assert image_tokens(800, 1280, 16) == 50 * 80 == 4000
    assert image_tokens(512, 2048, 16) == 32 * 128 == 4096


def test_thresholds_are_2304_for_vit_s_and_4608_for_vit_b():
    rows = analyze(preset="imagenet")["rows"]
    assert [(r["name"], r["dim"], r["threshold_6D"]) for r in rows] == [("ViT-S", 384, 2304), ("ViT-B", 768, 4608)]


def test_imagenet_is_short_and_coco_and_ade20k_are_long_for_vit_s():
    imagenet, coco, ade = (analyze(preset=p)["rows"][0] for p in ("imagenet", "coco", "ade20k"))
    assert imagenet["seq_len"] == 196 and imagenet["r_L"] == pytest.approx(196 / 2304) and not imagenet["long"]
    assert coco["seq_len"] == 4000 and coco["r_L"] == pytest.approx(1.736, abs=1e-3) and coco["long"]
    assert ade["seq_len"] == 4096 and ade["r_L"] == pytest.approx(1.778, abs=1e-3) and ade["long"]
    assert "Hypothesis 1" in imagenet["verdict"] and "Hypothesis 2" in coco["verdict"]
    assert not imagenet["ssm_expected_to_help"] and coco["ssm_expected_to_help"]


def test_flops_split_is_24_D2_L_against_4_D_L2_and_causal_halves_the_quadratic_term():
    full = LongSequenceTest("x", seq_len=4000, dim=384, causal=False)
    causal = LongSequenceTest("x", seq_len=4000, dim=384, causal=True)
    assert full.linear_flops == 24 * 384**2 * 4000 == 14_155_776_000
    assert full.attention_flops == 4 * 384 * 4000**2 == 24_576_000_000
    assert causal.attention_flops == full.attention_flops // 2
    # at L = 6D the two terms are equal
    assert LongSequenceTest("x", 2304, 384, False).quadratic_share == pytest.approx(0.5)
    assert "causal" in LongSequenceTest("x", 100, 384, True).verdict


def test_a_mambaout_model_is_judged_on_its_stride_16_stage():
    result = analyze(preset="imagenet", model="mambaout_tiny")
    assert [r["seq_len"] for r in result["rows"]] == [3136, 784, 196, 49]
    head = result["rows"][result["headline"]]
    assert (head["seq_len"], head["dim"], head["threshold_6D"]) == (196, 384, 2304)
    coco = analyze(preset="coco", model="mambaout_tiny")
    assert coco["rows"][coco["headline"]]["seq_len"] == 4000


def test_cli_prints_the_numbers_and_json(capsys):
    assert main(["analyze", "coco"]) == 0
    out = capsys.readouterr().out
    for text in ("4000", "2304", "4608", "1.74", "14.16G", "24.58G", "Hypothesis 2"):
        assert text in out
    assert main(["analyze", "--image-size", "512", "2048", "--dim", "384", "--causal", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"][0]["seq_len"] == 4096 and result["rows"][0]["attention_flops_4DL2"] == 2 * 384 * 4096**2


def test_user_mistakes_end_in_one_line_and_exit_2(capsys):
    assert main(["analyze", "--dim", "384", "--model", "mambaout_tiny"]) == 2
    assert main(["analyze", "--seq-len", "1000", "--model", "mambaout_tiny"]) == 2
    assert main(["analyze", "--image-size", "8", "8", "--patch-size", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("mambaout analyze: error: ") for line in err)


def test_measure_times_every_mixer_and_the_attention_kernel(tmp_path, capsys):
    assert default_seq_lens(384) == [288, 576, 1152, 2304, 4608]
    result = latency_sweep(dim=32, seq_lens=[32, 64], repeats=1, log=False)
    assert {(r["mixer"], r["seq_len"]) for r in result["rows"]} == {
        (m, L) for m in ("conv", "ssm", "attn") for L in (32, 64)
    }
    assert all(r["ms"] > 0 and r["peak_mb"] > 0 for r in result["rows"])
    assert [k["seq_len"] for k in result["attention_kernel"]] == [32, 64]
    assert result["predicted_crossover"] == 192
    args = ["analyze", "--seq-len", "64", "--dim", "16", "--causal", "--measure", "--seq-lens", "16", "32"]
    assert main([*args, "--output", str(tmp_path)]) == 0
    assert "predicted at L = 12·D" in capsys.readouterr().out
    assert (tmp_path / "latency_vs_length.png").stat().st_size > 1000
    assert json.loads((tmp_path / "sweep.json").read_text())["predicted_crossover"] == 192


def test_measure_warns_only_when_other_jobs_leave_no_core_free(monkeypatch):
    from mambaout.study import schedule

    monkeypatch.setattr(schedule, "busy_cores", lambda: None)  # an OS that says only the load average
    monkeypatch.setattr(schedule, "machine_load", lambda: (2, 0.6))
    assert schedule.busy_warning(1) is None and schedule.busy_warning(2) is None  # load 0.6 on 2 cores: quiet
    assert schedule.free_cores() == 2  # a fraction of a core's load takes no worker away
    monkeypatch.setattr(schedule, "machine_load", lambda: (2, 1.4))
    assert schedule.busy_warning(1) is None and schedule.busy_warning(2).startswith("the machine is loaded")
    assert schedule.free_cores() == 1
    monkeypatch.setattr(schedule, "machine_load", lambda: (2, 3.3))
    note = schedule.busy_warning(1)
    assert note.startswith("the machine is loaded (load average 3.3 on 2 cores, 1 thread asked)")
    assert schedule.free_cores() == 1
    monkeypatch.setattr(schedule, "machine_load", lambda: (16, 0.2))
    assert schedule.free_cores() == 16


def test_the_warning_reads_the_work_running_now_not_the_load_average_that_finished_workers_leave(monkeypatch):
    from mambaout.study import schedule

    monkeypatch.setattr(schedule, "machine_load", lambda: (2, 2.1))  # the study's two workers just finished
    monkeypatch.setattr(schedule, "busy_cores", lambda: 0.1)
    assert schedule.busy_warning(1) is None
    monkeypatch.setattr(schedule, "busy_cores", lambda: 1.9)
    assert schedule.busy_warning(1).startswith(
        "the machine is loaded (other work kept 1.9 of 2 cores busy just now, 1 thread asked)"
    )


def test_busy_cores_is_the_busy_share_of_this_process_cpus_between_two_readings(tmp_path, monkeypatch):
    from mambaout.study import schedule

    # user nice system idle iowait irq softirq steal: cpu0 busy 60 of 100 jiffies, cpu1 busy 10 of 100, cpu2 not ours
    readings = iter(
        [
            "cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 100 0 0 0 0\ncpu1 100 0 0 100 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0\n",
            "cpu  0 0 0 0 0 0 0 0\ncpu0 150 0 10 130 10 0 0 0\ncpu1 105 0 5 190 0 0 0 0\ncpu2 900 0 0 0 0 0 0 0\n",
        ]
    )
    stat = tmp_path / "stat"

    def sleep(_):  # the time between the two readings
        text = next(readings, None)
        if text is not None:
            stat.write_text(text)

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr("time.sleep", sleep)
    sleep(0)
    assert schedule.busy_cores(0.3, str(stat)) == pytest.approx(2 * 70 / 200)
    assert schedule.busy_cores(0.3, str(tmp_path / "missing")) is None  # no /proc/stat: the load average decides
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {7})  # CPUs the file does not list
    stat.write_text("cpu0 1 0 0 1 0 0 0 0\n")
    assert schedule.busy_cores(0.3, str(stat)) is None


def test_progress_eta_learns_the_machines_speed_from_finished_runs(capsys):
    from mambaout.study.progress import Progress

    progress = Progress([10.0, 30.0, 20.0], workers=2, tail_s=4.0)
    assert progress.eta_s() == 60 / 2 + 4  # the estimates, shared by two workers, then the measurements
    progress.done(1, 60.0, "copying ssm seed 0: 99.5 %")  # twice as slow as estimated
    assert progress.eta_s() == 2 * (30 / 2 + 4)
    line = capsys.readouterr().err
    assert line.startswith("[1/3] copying ssm seed 0: 99.5 % · elapsed 0.0 min, ETA 0.6 min")


def test_a_run_that_converged_early_tells_the_eta_its_speed_per_planned_step_not_a_faster_machine():
    from mambaout.study.progress import Progress

    progress = Progress([10.0, 30.0, 20.0], workers=1)
    progress.done(1, 15.0, "copying attn seed 0: 100.0 % (converged at step 300 of 1200)", fraction=0.25)
    assert progress.speed() == 2.0  # 15 s for a quarter of the steps: 60 s for the whole budget, estimated 30
    assert progress.eta_s() == 2.0 * (10 + 20)
