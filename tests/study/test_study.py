"""`mambaout study`: the tasks, the sequence models, the verdicts, and a micro study end to end."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from mambaout import UserError
from mambaout.cli import main
from mambaout.engine.records import plural
from mambaout.models.sequence import SequenceModel
from mambaout.study.figures import accuracy_figure, clipped_error
from mambaout.study.image_tasks import DigitsTask, ImageFolderTask
from mambaout.study.render import format_table
from mambaout.study.runner import build_tasks, run_study
from mambaout.study.selective_copying import selective_copying_batch
from mambaout.study.stats import compare, task_verdict


def test_selective_copying_hides_the_data_tokens_in_blanks_and_asks_for_them_in_order():
    x, y = selective_copying_batch(64, data_len=32, num_tokens=4, vocab=8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (64, 36) and y.shape == (64, 4)
    data = x[:, :32]
    assert ((data > 0).sum(1) == 4).all()  # exactly the 4 data tokens are not blank
    assert torch.equal(data[data > 0].reshape(64, 4) - 1, y)  # targets are the data tokens in order
    assert (x[:, 32:] == 9).all()  # then the markers
    assert 0 <= y.min() and y.max() <= 7


@pytest.mark.parametrize("mixer", ["conv", "ssm", "attn_causal"])
def test_causal_sequence_models_give_the_same_prediction_whatever_comes_later(mixer):
    torch.manual_seed(0)
    model = SequenceModel(vocab_size=10, num_classes=8, dim=32, depth=2, mixer=mixer).eval()
    x = torch.randint(0, 10, (2, 40))
    x2 = x.clone()
    x2[:, 21:] = torch.randint(0, 10, (2, 19))
    y1, y2 = model(x), model(x2)
    assert torch.equal(y1[:, :21], y2[:, :21])
    assert (y1[:, 21:] - y2[:, 21:]).abs().max() > 1e-4


def test_a_local_conv_model_cannot_see_further_back_than_depth_times_kernel_minus_one():
    torch.manual_seed(0)
    depth, k = 2, 4
    model = SequenceModel(vocab_size=10, num_classes=8, dim=32, depth=depth, mixer="conv", kernel_size=k).eval()
    x = torch.randint(1, 10, (1, 40))
    reach = depth * (k - 1)  # 6 tokens
    at_reach, beyond = x.clone(), x.clone()
    at_reach[0, 39 - reach] = 0
    beyond[0, 39 - reach - 1] = 0
    last = model(x)[0, 39]
    assert not torch.equal(model(at_reach)[0, 39], last)  # tiny at init (0.02 weights), but not zero
    assert torch.equal(model(beyond)[0, 39], last)


def test_digits_are_a_fixed_stratified_split_of_1437_and_360_images():
    task = DigitsTask()
    assert task.x_train.shape == (1437, 1, 32, 32) and task.x_test.shape == (360, 1, 32, 32)
    assert torch.bincount(task.y_test).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]  # 20 % of each class
    assert task.mixer_tokens() == (64, 16)  # stage 1 of mambaout_pico at 32x32: 8x8 tokens, width 16
    assert task.steps_per_epoch(64) == 23


def _summary(mean, std, n=360, **cost):
    return dict(accuracy_mean=mean, accuracy_std=std, eval_count=n, train_seconds_mean=10.0, **cost)


def test_verdicts_say_within_noise_helped_or_contradicts():
    cost = dict(latency_ms_b1=2.0, latency_ms_bN=10.0, macs=100)
    within = compare(_summary(0.95, 0.01, latency_ms_b1=5.0, macs=120), _summary(0.94, 0.01, **cost))
    # σ = max(seed std 1.0, sampling sqrt(.945·.055/360) = 1.2 points): Δ = 1.0 < 2σ = 2.4
    assert within["delta_points"] == pytest.approx(1.0) and within["noise_2sigma"] == pytest.approx(2.403, abs=1e-3)
    assert not within["significant"] and within["latency_ms_b1_ratio"] == 2.5
    short = dict(seq_len=64, dim=16, r_L=0.67, long=False, causal=False, ssm_expected_to_help=False, verdict="short")
    task = dict(prediction=short, mixers=dict(conv=_summary(0.94, 0.01, **cost), ssm=_summary(0.95, 0.01, **cost)))
    v = task_verdict(task)
    assert v["agreement"] == "agrees with the paper (Hypothesis 1)" and "within noise" in v["measured"][0]
    task["mixers"]["ssm"] = _summary(0.99, 0.002, **cost)
    assert task_verdict(task)["agreement"] == "contradicts the paper"
    causal = dict(short, causal=True, ssm_expected_to_help=True)
    task = dict(
        prediction=causal, mixers=dict(conv=_summary(0.12, 0.01, 2048, **cost), ssm=_summary(0.80, 0.05, 2048, **cost))
    )
    v = task_verdict(task)
    assert v["agreement"] == "agrees with the paper" and v["measured"][0].startswith("ssm vs conv: +68.0 points")


def test_micro_study_writes_results_report_and_each_runs_config(tmp_path):
    tasks = build_tasks(["digits", "selective_copying"])
    budget = dict(steps=2, batch_size=8, lr=1e-3, warmup_steps=1)
    results = run_study(
        tasks, seeds=[0, 1], budget=budget, mixers=["conv", "ssm"], output=tmp_path, sweep=[16, 32], workers=1
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["tasks"].keys() == {"digits", "selective_copying"} == results["tasks"].keys()
    for task in saved["tasks"].values():
        assert task["mixers"].keys() == {"conv", "ssm"}
        s = task["mixers"]["ssm"]
        assert len(s["accuracies"]) == 2 and 0 <= s["accuracy_mean"] <= 1
        for key in (
            "accuracy_std",
            "params",
            "macs",
            "train_seconds_mean",
            "latency_ms_b1",
            "latency_ms_bN",
            "peak_train_mem_mb",
        ):
            assert s[key] >= 0, key
        assert s["params"] > task["mixers"]["conv"]["params"] and s["macs"] > task["mixers"]["conv"]["macs"]
        assert {"prediction", "measured", "agreement"} <= task["verdict"].keys()
    assert saved["tasks"]["selective_copying"]["prediction"]["causal"] is True
    assert saved["tasks"]["digits"]["prediction"]["ssm_expected_to_help"] is False
    assert [r["seq_len"] for r in saved["sweep"]["rows"] if r["mixer"] == "ssm"] == [16, 32]
    config = json.loads((tmp_path / "runs" / "digits-ssm-seed1" / "config.json").read_text())
    assert config["seed"] == 1 and config["budget"]["steps"] == 2 and config["mixer_kwargs"] == {}
    report = (tmp_path / "report.md").read_text()
    assert "Paper's prediction" in report and "- ssm vs conv" in report and "accuracy_vs_macs.png" in report
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "<table>" in html and "<li>ssm vs conv" in html


def test_a_run_that_converges_before_its_budget_ends_there_and_the_report_says_after_how_many_steps(tmp_path):
    budget = dict(steps=8, batch_size=8, lr=1e-3, warmup_steps=1, stop_loss=100.0, stop_window=3)  # always below
    results = run_study(
        build_tasks(["selective_copying"]), seeds=[0, 1], budget=budget, mixers=["conv"], output=tmp_path, sweep=False
    )
    result = json.loads((tmp_path / "runs" / "selective_copying-conv-seed1" / "result.json").read_text())
    assert result["steps"] == result["converged_at"] == 3
    assert results["tasks"]["selective_copying"]["mixers"]["conv"]["steps_per_seed"] == [3, 3]
    report = (tmp_path / "report.md").read_text()
    assert "up to 8 steps of batch 8, a run ending once its training loss averages 100 over 3 steps" in report
    assert "(steps run per seed: conv 3 / 3)" in report


def test_the_kernels_compiled_aside_leave_nothing_for_the_first_scan_to_compile():
    from mambaout.ssm import fused
    from mambaout.study.schedule import compile_kernels_aside, joined

    assert joined(compile_kernels_aside()) is None  # exit code 0: the kernels are in numba's cache
    kernels = (fused.scan_fwd_serial, fused.scan_bwd_serial)  # the study's scans are on one thread, below 2^24 updates
    fresh = [k for k in kernels if not k.signatures]
    fused.compile_kernels(parallel=False)  # loads what is cached; compiling from scratch here would take ~5 s
    assert all(len(k.stats.cache_hits) == 1 for k in fresh)


def test_study_on_your_own_image_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for cls, colour in (("cats", 0), ("dogs", 2)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(10):
            img = rng.integers(0, 80, (20, 20, 3), dtype=np.uint8)
            img[..., colour] += 150
            Image.fromarray(img).save(tmp_path / "data" / cls / f"{i}.png")
    out = tmp_path / "out"
    args = [
        "study",
        "--data",
        str(tmp_path / "data"),
        "--mixers",
        "conv,attn",
        "--budget",
        "small",
        "--image-size",
        "16",
        "--no-sweep",
        "--output",
        str(out),
    ]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    task = results["tasks"]["images:data"]
    assert task["config"]["classes"] == ["cats", "dogs"] and task["config"]["test_images"] == 4
    assert task["mixers"].keys() == {"conv", "attn"} and len(task["mixers"]["attn"]["accuracies"]) == 2
    assert "images:data" in capsys.readouterr().out
    assert main(["study", "--data", str(tmp_path / "missing"), "--output", str(out)]) == 2


def _images(folder, n):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")


def test_image_folder_takes_train_and_val_folders_or_explains_why_it_cannot_split(tmp_path):
    for part, n in (("train", 3), ("val", 2)):
        for cls in ("a", "b"):
            _images(tmp_path / "tv" / part / cls, n)
    task = ImageFolderTask(tmp_path / "tv", image_size=16)
    assert (task.config()["train_images"], task.config()["test_images"], task.classes) == (6, 4, ["a", "b"])
    _images(tmp_path / "tiny" / "a", 5)
    _images(tmp_path / "tiny" / "b", 1)
    with pytest.raises(UserError, match="cannot be split 80/20 by class"):
        ImageFolderTask(tmp_path / "tiny")


def _seeds(*accs, n=2048, **cost):
    mean = sum(accs) / len(accs)
    std = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5 if len(accs) > 1 else 0.0
    return dict(
        accuracy_mean=mean, accuracy_std=std, accuracies=list(accs), eval_count=n, train_seconds_mean=10.0, **cost
    )


CAUSAL = dict(seq_len=36, dim=64, r_L=0.09, long=False, causal=True, ssm_expected_to_help=True, verdict="causal")
SHORT = dict(seq_len=64, dim=16, r_L=0.67, long=False, causal=False, ssm_expected_to_help=False, verdict="short")


def test_bottom_line_says_use_the_ssm_when_it_wins_on_every_seed():
    mixers = dict(
        conv=_seeds(0.115, 0.117, latency_ms_b1=1.0, peak_train_mem_mb=10.0),
        ssm=_seeds(0.995, 0.999, latency_ms_b1=3.2, peak_train_mem_mb=14.0),
    )
    v = task_verdict(dict(prediction=CAUSAL, mixers=mixers))
    assert v["bottom_line"] == "Use the SSM: +88.1 points over the gated conv at 3.2× the latency and 1.4× the memory."
    assert v["agreement"] == "agrees with the paper"


def test_bottom_line_keeps_the_conv_when_the_ssm_adds_nothing_measurable():
    mixers = dict(
        conv=_seeds(0.972, 0.978, n=360, latency_ms_b1=5.0, peak_train_mem_mb=10.0),
        ssm=_seeds(0.975, 0.979, n=360, latency_ms_b1=15.5, peak_train_mem_mb=25.0),
    )
    v = task_verdict(dict(prediction=SHORT, mixers=mixers))
    # σ = sampling error sqrt(.976·.024/360) = 0.81 points > the seeds' std: 2σ = 1.6
    assert v["bottom_line"] == (
        "Keep the gated conv: the SSM adds nothing measurable here (+0.2 points, noise ±1.6) at 3.1× the latency "
        "and 2.5× the memory."
    )
    assert v["agreement"] == "agrees with the paper (Hypothesis 1)"


def test_seeds_that_disagree_make_the_comparison_inconclusive_not_within_noise():
    mixers = dict(
        conv=_seeds(0.115, 0.117), ssm=_seeds(0.121, 0.997), attn_causal=_seeds(0.999, 0.997)
    )  # one SSM seed never left chance: its seeds differ by 87.6 points, more than its 44.3-point lead
    v = task_verdict(dict(prediction=CAUSAL, mixers=mixers))
    assert v["bottom_line"] == "Inconclusive: seeds disagree (ssm: 12.1 and 99.7)."
    assert v["ssm_vs_conv"]["seeds_disagree"] and not v["ssm_vs_conv"]["significant"]
    assert v["measured"][0].startswith("ssm vs conv: inconclusive (seeds disagree: ssm: 12.1 and 99.7;")
    assert not any("within noise" in line for line in v["measured"])
    # a seed that learnt late but still beat every conv seed by far: the SSM helps, and the verdict shows the spread
    # (seeds 98.8 and 43.7 differ by 55.1 points, less than the 59.8-point lead, yet 2σ = 77.9 exceeds the lead)
    mixers["ssm"] = _seeds(0.988, 0.437)
    v = task_verdict(dict(prediction=CAUSAL, mixers=mixers))
    c = v["ssm_vs_conv"]
    assert c["separated"] and c["significant"] and not c["seeds_disagree"] and c["noise_2sigma"] > c["delta_points"]
    assert v["bottom_line"] == "Use the SSM: +59.7 points over the gated conv (every seed ahead; ssm: 98.8 and 43.7)."
    assert v["measured"][0].startswith("ssm vs conv: +59.7 points (every seed by more than 4.4; seeds: ssm: 98.8 and")
    # a conv seed within the test sample's bound of the SSM's worst: not separated, the spread decides
    assert not compare(_seeds(0.60, 0.99), _seeds(0.115, 0.59))["separated"]
    mixers["ssm"] = _seeds(0.995, 0.997)
    mixers["attn_causal"] = _seeds(1.0, 0.563)
    v = task_verdict(dict(prediction=CAUSAL, mixers=mixers))
    assert v["bottom_line"] == "Use the SSM: +88.0 points over the gated conv."  # no costs measured here
    assert "ssm vs attn_causal: inconclusive (seeds disagree: attn_causal: 100.0 and 56.3;" in v["measured"][2]
    # when attention matches the SSM at a lower latency, the bottom line says so
    mixers["attn_causal"] = _seeds(0.999, 0.997, latency_ms_b1=1.0)
    mixers["ssm"]["latency_ms_b1"] = 2.0
    v = task_verdict(dict(prediction=CAUSAL, mixers=mixers))
    assert v["bottom_line"] == (
        "Use the SSM: +88.0 points over the gated conv. Causal attention does as well (within noise) at 0.5× the "
        "SSM's latency."
    )
    # seeds 2 points apart near 100 % are not a disagreement, however small the sampling error
    assert not compare(_seeds(0.98, 0.999), _seeds(0.995, 0.996))["seeds_disagree"]


def test_table_and_report_show_every_seed_and_where_it_ran():
    mixers = dict(conv=_seeds(0.115, 0.116, latency_ms_b1=1.0), ssm=_seeds(0.995, 0.999, latency_ms_b1=3.0))
    for s in mixers.values():
        s.update(seeds=[0, 1], params=1000, macs=2e6, latency_ms_bN=1.0, peak_train_mem_mb=1.0)
    task = dict(prediction=CAUSAL, mixers=mixers, config=dict(task="copy", chance=0.125), budget=dict(steps=1))
    task["verdict"] = task_verdict(task)
    env = dict(device="cpu", cpu="AMD EPYC, 2 cores, AVX512", torch="2", threads=1)
    load = dict(cores=2, start=0.3, after_training=2.1, measuring=[2.0, 1.9])
    meta = dict(command="mambaout study", budget="default", seeds=[0, 1], workers=1, environment=env, load=load)
    results = dict(meta=dict(meta, wall_seconds=60.0), tasks=dict(copy=task))
    table = format_table(results)
    assert "99.5 / 99.9" in table and "11.5 / 11.6" in table
    assert "cpu (AMD EPYC, 2 cores, AVX512), 1 thread per run in 1 worker process; load average 0.3" in table
    assert "2 seeds (0, 1)" in table
    fig = accuracy_figure(results)
    fig.canvas.draw()
    for ax in fig.axes:
        boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()]
        assert len(boxes) >= 2 and not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
        for line in ax.lines:  # whiskers and markers: never outside [0, 100] %
            y = line.get_ydata()
            assert min(y) >= 0 and max(y) <= 100
    assert clipped_error(99.0, 3.0) == (3.0, 1.0) and clipped_error(1.0, 3.0) == (1.0, 3.0)


def test_english_plurals():
    assert [plural(n, "thread") for n in (0, 1, 2)] == ["0 threads", "1 thread", "2 threads"]
    assert plural(1, "class") == "1 class" and plural(3, "class") == "3 classes"


def test_plurals_of_the_words_a_training_run_prints():
    assert [plural(n, w) for n, w in ((2, "epoch"), (3, "update"), (2, "worker process"))] == [
        "2 epochs",
        "3 updates",
        "2 worker processes",
    ]


def thread_pools(shared, job):
    """Every thread pool of a study worker (a module-level function, so that the spawned workers can import it)."""
    import numba
    import sklearn.linear_model  # noqa: F401  (SciPy's OpenBLAS loads here, after the worker's start)
    from threadpoolctl import threadpool_info

    pools = [(i["user_api"], i["num_threads"]) for i in threadpool_info()]
    return sorted(pools) + [("torch", torch.get_num_threads()), ("numba", numba.get_num_threads())]


def test_a_worker_and_one_thread_leave_every_thread_pool_at_one_thread(monkeypatch):
    from mambaout.study.schedule import THREAD_ENV, run_jobs

    for name in THREAD_ENV:  # as a plain shell starts the study: every library would take a thread per core
        monkeypatch.delenv(name, raising=False)
    # NumPy arrays in what every worker receives: NumPy (and its OpenBLAS) load while the worker unpickles them,
    # before its start-up sets the environment; with 2 threads there the line's memory probe ran 3x slower
    shared = [np.ones((64, 64))]
    for pools in run_jobs(thread_pools, shared, [0, 1], workers=2):
        assert any(api == "blas" for api, _ in pools) and all(n == 1 for _, n in pools), pools
    # in a fresh process (the one-worker path, the set-up): a library loaded inside the block, and one loaded before
    code = (
        "import numpy, json\n"
        "from threadpoolctl import threadpool_info\n"
        "from mambaout.study.schedule import one_thread\n"
        "with one_thread():\n"
        "    import sklearn.linear_model\n"
        "    inside = [i['num_threads'] for i in threadpool_info()]\n"
        "after = [i['num_threads'] for i in threadpool_info()]\n"
        "print(json.dumps([inside, after]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    inside, after = json.loads(out.strip().splitlines()[-1])
    assert len(inside) >= 3 and all(n == 1 for n in inside), inside
    if (os.cpu_count() or 1) > 1:
        assert max(after) > 1, after  # restored: the pools have their own counts again


def test_runs_in_worker_processes_give_the_same_numbers_as_in_this_process(tmp_path, capsys):
    from mambaout.study.schedule import SetUpAside
    from mambaout.study.selective_copying import SelectiveCopyingTask

    tasks = build_tasks(["selective_copying"])
    budget = dict(steps=3, batch_size=8, lr=1e-3, warmup_steps=1)
    kw = dict(seeds=[0, 1], budget=budget, mixers=["conv", "ssm"], sweep=False)
    here = run_study(tasks, output=tmp_path / "here", workers=1, **kw)
    # in the pool, the same task a second time, set up aside (as the study sets up the line) while the first one's
    # runs train: its runs join the queue when it is ready
    aside = SetUpAside(SelectiveCopyingTask, {}, tmp_path / "task.pt", name="copying_aside")
    pool = run_study([*tasks, aside], output=tmp_path / "pool", workers=2, **kw)
    assert pool["meta"]["workers"] == 2 and not (tmp_path / "task.pt").exists()  # handed over, then removed
    assert "copying_aside: set up; its 4 runs join the queue" in capsys.readouterr().err
    for mixer in ("conv", "ssm"):
        assert len(list((tmp_path / "here" / "runs").glob(f"selective_copying-{mixer}-seed*/result.json"))) == 2
        assert len(list((tmp_path / "pool" / "runs").glob(f"*-{mixer}-seed*/result.json"))) == 4
        a = here["tasks"]["selective_copying"]["mixers"][mixer]
        for name in ("selective_copying", "copying_aside"):
            assert pool["tasks"][name]["mixers"][mixer]["accuracies"] == a["accuracies"]
        runs = (("here", "selective_copying"), ("pool", "selective_copying"), ("pool", "copying_aside"))
        losses = [
            [
                json.loads(p.read_text())["final_loss"]
                for p in sorted((tmp_path / out).glob(f"runs/{n}-{mixer}-*/result.json"))
            ]
            for out, n in runs
        ]
        # bit for bit in this process, in a worker, and set up aside; and the seeds differ
        assert losses[0] == losses[1] == losses[2] and losses[0][0] != losses[0][1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["study", "--seeds", "0"], "--seeds must be a positive whole number, got 0"),
        (["study", "--seeds", "-2"], "--seeds must be a positive whole number, got -2"),
        (["study", "--workers", "0"], "--workers must be a positive whole number, got 0"),
        (["study", "--image-size", "0"], "--image-size must be a positive whole number, got 0"),
        (["analyze", "--dim", "0"], "--dim must be a positive whole number, got 0"),
        (["analyze", "--seq-len", "-5", "--dim", "64"], "--seq-len must be a positive whole number, got -5"),
        (["analyze", "--measure", "--threads", "0"], "--threads must be a positive whole number, got 0"),
    ],
)
def test_impossible_values_are_refused_in_one_sentence(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("args", [["study", "--seed", "3"], ["study", "--work", "2"], ["analyze", "--meas"]])
def test_flags_must_be_spelled_out(args, capsys):
    with pytest.raises(SystemExit) as exit:
        main(args)
    assert exit.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_study_and_analyze_commands_import_no_heavy_library_until_they_run():
    import subprocess
    import sys
    from pathlib import Path

    import mambaout

    # The package's own __init__ (not this module's concern) is bypassed: only what the command modules import counts.
    code = (
        "import sys, types; pkg = types.ModuleType('mambaout'); pkg.__path__ = [sys.argv[1]]; "
        "sys.modules['mambaout'] = pkg; import mambaout.study.cli, mambaout.study.analyze, mambaout.study.render, "
        "mambaout.study.schedule, mambaout.study.progress; "
        "print(sorted({'torch', 'numpy', 'numba', 'timm', 'matplotlib', 'sklearn'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(mambaout.__file__).parent)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_markdown_table_of_the_report_is_a_table_in_its_html(tmp_path):
    import re

    from mambaout.study.render import write_report

    kinds = dict(local=0.9, contextual=0.6)
    mixers = {}
    for mixer, acc in (("conv", 0.74), ("ssm", 0.73)):
        mixers[mixer] = _seeds(acc, acc + 0.01, latency_ms_b1=1.0, params=1000, macs=2e6, peak_train_mem_mb=1.0)
        mixers[mixer].update(
            auroc_per_kind=kinds,
            auroc_per_kind_seeds={k: [v, v] for k, v in kinds.items()},
            stream={str(n): dict(step_ms=0.5, state_bytes=1024 * n) for n in (100, 1000)},
        )
    line = dict(prediction=CAUSAL, mixers=mixers, budget=dict(steps=1, batch_size=2))
    line["config"] = dict(task="line", context_frames=144, cycle_frames=48, conv_reach=9)
    line["config"]["set_up_cpu_seconds"] = dict(video=9.6, encoder=31.5, patch_bank=7.2, test_frames=52.4)
    line["verdict"] = task_verdict(line)
    env = dict(device="cpu", cpu="AMD EPYC, 2 cores, AVX512", torch="2", threads=1)
    meta = dict(command="mambaout study", budget="default", seeds=[0, 1], environment=env, wall_seconds=60.0)
    paths = write_report(dict(meta=meta, tasks=dict(line=line)), tmp_path)
    markdown_text, html = paths["markdown"].read_text(), paths["html"].read_text()
    # a Markdown table: a header row followed by its |---| separator row
    tables = re.findall(r"^\|.*\|\n\|(?:-+\|)+$", markdown_text, flags=re.M)
    assert len(tables) == 3  # the summary, the line task's AUROC per kind and its streaming cost
    assert html.count("<table>") == len(tables) and "| mixer |" not in html
    assert "<th>AUROC contextual</th>" in html and "<td>90.0 (90 / 90)</td>" in html
    assert html.count("data:image/png;base64,") == 2 and "<strong>line:</strong>" in html
    # the set-up every line run shares is reported beside the runs' own training seconds
    assert (
        "set-up, which its train s leaves out: 101 CPU seconds (video 10, encoder 32, patch bank 7, test frames 52)"
        in markdown_text
    )


def busy(seconds: float) -> None:
    """Work (not sleep) for `seconds` of this process's CPU time: the study times its probes in CPU time."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


def test_run_estimates_are_timed_on_this_machine_from_a_few_steps(monkeypatch):
    # a model whose every training step costs at least 50 ms of CPU here: the estimate of a 40-step run must see it
    from mambaout.study.runner import estimate_seconds

    task = build_tasks(["selective_copying"])[0]
    loss = task.loss
    monkeypatch.setattr(task, "loss", lambda model, x, y: busy(0.05) or loss(model, x, y))
    budget = dict(steps=40, batch_size=4, lr=1e-3, warmup_steps=1)
    assert estimate_seconds(task, "conv", budget, torch.device("cpu")) >= 40 * 0.05  # a constant would not know


def test_a_task_that_trains_itself_is_timed_for_the_updates_it_says_a_run_makes(monkeypatch):
    # the line trains itself (run_one); its estimate times a few updates of its model here, times the updates it
    # reports: the budget's steps plus its share of the learning-rate sweep, none for a mixer that trains nothing
    from mambaout.anomaly.study_task import LineTask
    from mambaout.study.runner import estimate_seconds

    default = LineTask.budgets["default"]  # 400 steps, a sweep of 2 learning rates x 50 updates
    assert LineTask.run_updates(None, "ssm", default, seeds=2) == 400 + 2 * 50 / 2
    assert LineTask.run_updates(None, "frame", default, seeds=2) == 0

    task = build_tasks(["selective_copying"])[0]  # stands in for a self-training task: a model, batches and a loss
    loss = task.loss
    monkeypatch.setattr(task, "loss", lambda model, x, y: busy(0.05) or loss(model, x, y))
    monkeypatch.setattr(task, "run_one", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(
        task, "run_updates", lambda mixer, budget, seeds: 0 if mixer == "frame" else 30 / seeds, raising=False
    )
    budget = dict(steps=1000, batch_size=4, lr=1e-3, warmup_steps=1)
    one_seed = estimate_seconds(task, "conv", budget, torch.device("cpu"), seeds=1)
    two_seeds = estimate_seconds(task, "conv", budget, torch.device("cpu"), seeds=2)
    assert 30 * 0.05 <= one_seed < 1000 * 0.05  # 30 updates timed at >= 50 ms each, not the budget's 1000 steps
    assert 15 * 0.05 <= two_seeds < 0.9 * one_seed  # half the updates each
    assert estimate_seconds(task, "frame", budget, torch.device("cpu")) == 0.5


def test_a_task_set_up_aside_sweeps_each_mixers_learning_rate_before_its_runs_join(monkeypatch):
    # two seeds of one mixer start side by side in two workers: the sweep they share must exist before either starts,
    # or each sweeps into the same folder (and the second's checkpoint rename finds the first's gone)
    import mambaout.study.runner as runner

    swept = []

    class Swept:  # stands in for the line: a learning-rate sweep per mixer
        def learning_rate(self, mixer, budget):
            swept.append(mixer)
            return budget["lrs"][0], {}

    def estimate(task, mixers, budget, device, seeds):
        assert swept == ["conv", "ssm"]  # every sweep made before any run is estimated
        return {m: budget["lrs"] for m in mixers}

    monkeypatch.setattr(runner, "estimate_runs", estimate)
    budget = dict(steps=400, lrs=(3e-3, 1e-2), sweep_steps=50)
    estimates = runner.set_up_runs(Swept(), ["conv", "ssm"], budget, torch.device("cpu"), seeds=2)
    assert estimates == {"conv": (), "ssm": ()}  # the runs are timed for their own updates: the sweep is done
    assert budget["lrs"] == (3e-3, 1e-2)  # the runs' budget keeps its sweep, which they read back


def test_the_full_budget_runs_the_built_in_line_in_two_renderings(monkeypatch, tmp_path):
    import mambaout.anomaly.study_task as study_task

    made = []

    class Recorded:  # stands in for LineTask: records how the study builds it (the real one generates and trains)
        name = "line"

        def __init__(self, data=None, work_dir=None, budget="default", line=None):
            made.append(dict(data=data, work_dir=work_dir, budget=budget, line=line))

    monkeypatch.setattr(study_task, "LineTask", Recorded)
    full = build_tasks(["line"], budget="full", work_dir=tmp_path)
    assert [t.name for t in full] == ["line", "line-g1"] and made == []  # set up later: aside, while other runs train
    assert [t.build().name for t in full] == ["line", "line-g1"]
    assert [m["line"] for m in made] == [None, {"seed": 1}] and made[1]["work_dir"] == tmp_path / "line-g1"
    made.clear()
    assert [t.build().name for t in build_tasks(["line"], budget="default", work_dir=tmp_path)] == ["line"]
    assert len(made) == 1
