"""The detector: matched causal temporal models, an encoder that does not collapse, a predictor better than
repeating the last frame, calibration on normal video, and runs that resume to the same detector."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from mambaout.anomaly.config import AnomalyConfig
from mambaout.anomaly.detector import load_detector
from mambaout.anomaly.encoder import embed_frames
from mambaout.anomaly.line import ITEM_KINDS, Line, LineConfig, VideoPlan, generate_line
from mambaout.anomaly.temporal import (
    TemporalModel,
    matched_widths,
    state_bytes,
    stream_checkpoints,
    temporal_params,
)
from mambaout.anomaly.train import split_point, train_detector
from mambaout.cli import main
from mambaout.errors import UserError
from mambaout.video import open_video

LINE = LineConfig(
    period=6, spacing=8, frames=480, test_frames=300, train_videos=1, test_videos=1, size=32, seed=5, calm=1
)
HORIZONS = (1, 8)


def tiny_config(data, output, mixer="conv", **overrides) -> AnomalyConfig:
    """A detector that trains in seconds on the small line (32x32 frames)."""
    values = dict(
        data=str(data),
        output=str(output),
        mixer=mixer,
        image_size=32,
        embed_dim=16,
        recon_size=8,
        encoder_steps=60,
        encoder_batch_size=16,
        encoder_lr=3e-3,
        width=32,
        horizons=HORIZONS,
        steps=80,
        batch_size=4,
        seq_len=96,
        burn_in=56,
        codes=16,
        lr=5e-3,
        warmup_steps=5,
        checkpoint_every=0,
        threads=1,
    )
    values.update(overrides)
    return AnomalyConfig(**values)


def build_run(root, mixer="conv", encoder=None, name=None, **overrides):
    """Generate the small line under `root` (once) and train a detector on it; returns (data, run folder)."""
    data = root / "line"
    if not (data / "meta.json").is_file():
        generate_line(data, LINE)
    run = root / (name or mixer)
    train_detector(tiny_config(data, run, mixer, encoder=str(encoder or ""), **overrides))
    return data, run


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("detector"))


@pytest.mark.parametrize("width", [32, 64])
def test_temporal_models_differ_only_in_the_mixer_at_one_parameter_count(width):
    widths = matched_widths(32, width, depth=2, kernel_size=4, horizons=(1, 16))
    counts = {m: temporal_params(32, w, m, depth=2, kernel_size=4, horizons=(1, 16)) for m, w in widths.items()}
    assert widths["conv"] == width and widths["ssm"] < width and widths["attn_causal"] < widths["ssm"]
    for mixer, count in counts.items():
        assert abs(count - counts["conv"]) <= 0.10 * counts["conv"], (mixer, counts)
    models = {m: TemporalModel(32, w, depth=2, mixer=m) for m, w in widths.items()}
    assert {len(m.blocks) for m in models.values()} == {2}


@pytest.mark.parametrize("mixer,window", [("conv", None), ("ssm", None), ("attn_causal", None), ("attn_causal", 5)])
def test_stepping_frame_by_frame_gives_the_offline_predictions(mixer, window):
    torch.manual_seed(0)
    model = TemporalModel(16, 32, depth=2, mixer=mixer, horizons=HORIZONS, window=window).eval()
    x = torch.randn(2, 40, 16)
    with torch.no_grad():
        offline = model(x)
        state, steps = model.init_state(2), []
        for t in range(40):
            y, state = model.step(x[:, t], state)
            steps.append(y)
    assert (torch.stack(steps, 1) - offline).abs().max() < 1e-5


@pytest.mark.parametrize("mixer,window", [("conv", None), ("ssm", None), ("attn_causal", None), ("attn_causal", 5)])
def test_chunks_with_the_state_carried_give_the_whole_stream_and_their_gradients(mixer, window):
    torch.manual_seed(0)
    model = TemporalModel(16, 32, depth=2, mixer=mixer, horizons=HORIZONS, window=window, codes=12)
    x = torch.randn(2, 45, 16, requires_grad=True)
    offline = model(x)
    state, chunks = model.init_state(2), []
    for start in range(0, 45, 16):  # 16, 16, 13 frames
        y, state = model(x[:, start : start + 16], state)
        chunks.append(y)
    streamed = torch.cat(chunks, 1)
    assert (streamed - offline).abs().max() < 1e-5
    (g_offline,) = torch.autograd.grad(offline[:, -1].sum(), x)
    (g_streamed,) = torch.autograd.grad(streamed[:, -1].sum(), x)  # back through the carried states
    assert (g_streamed - g_offline).abs().max() < 1e-5
    # the last frame's prediction depends on the first chunk through the state for the mixers whose memory reaches it
    long_memory = mixer == "ssm" or (mixer == "attn_causal" and window is None)
    assert bool(g_offline[:, :16].abs().max() > 0) == long_memory


@pytest.mark.parametrize("mixer,window", [("conv", None), ("ssm", None), ("attn_causal", None), ("attn_causal", 5)])
def test_a_stream_reaches_its_checkpoints_in_chunks_with_the_state_of_stepping_every_frame(mixer, window):
    torch.manual_seed(0)
    model = TemporalModel(16, 32, depth=2, mixer=mixer, horizons=HORIZONS, window=window, codes=12).eval()
    x = torch.randn(130, 1, 16)
    stepped, state = {}, model.init_state(1)
    with torch.no_grad():
        for t in range(130):
            _, state = model.step(x[t], state)
            if t + 1 in (7, 60, 130):
                stepped[t + 1] = copy.deepcopy(state)  # a step writes attention's cache in place
    seen = [(n, len(times)) for n, _, times in stream_checkpoints(model, x, (7, 60, 130), stepped=20)]
    assert seen == [(7, 7), (60, 20), (130, 20)]  # 7 steps, then a chunk of 33 and 20 steps, a chunk of 50 and 20

    def live(s):  # every tensor of a state; an unwindowed cache up to the frames seen (its capacity is sized apart)
        if isinstance(s, dict):
            kv = s.get("kv")
            if kv is not None and s["window"] is None:
                s = dict(s, kv=kv[:, :, :, : s["length"]])
            s = list(s.values())
        if isinstance(s, (list, tuple)):
            return [t for v in s for t in live(v)]
        return [s] if isinstance(s, torch.Tensor) else []

    for n, state, _ in stream_checkpoints(model, x, (7, 60, 130), stepped=20):
        for a, b in zip(live(state), live(stepped[n]), strict=True):
            assert a.shape == b.shape and (a - b).abs().max() < 1e-5, (mixer, n)
        if mixer != "attn_causal" or window:
            assert state_bytes(state) == state_bytes(stepped[n])


def test_attention_with_a_window_sees_exactly_the_last_w_frames():
    # one block: its causal conv (kernel 4) reaches 3 frames back, then attention W - 1 more
    torch.manual_seed(0)
    model = TemporalModel(8, 32, depth=1, mixer="attn_causal", window=6, horizons=(1,)).eval()
    x = torch.randn(1, 30, 8)
    t, reach = 25, 6 - 1 + 4 - 1
    with torch.no_grad():
        base = model(x)[0, t]
        for past, changes in ((t - reach, True), (t - reach - 1, False)):
            moved = x.clone()
            moved[0, past] += 5.0
            assert bool((model(moved)[0, t] - base).abs().max() > 0) == changes, past  # masked keys weigh exactly 0


def test_conv_and_ssm_states_stay_flat_while_unwindowed_attention_grows():
    sizes = {}
    for mixer, window in (("conv", None), ("ssm", None), ("attn_causal", None), ("attn_causal", 16)):
        model = TemporalModel(16, 32, depth=2, mixer=mixer, window=window).eval()
        state, seen = model.init_state(1), []
        with torch.no_grad():
            for t in range(1, 1025):
                _, state = model.step(torch.randn(1, 16), state)
                if t in (64, 1024):
                    seen.append(state_bytes(state))
        sizes[(mixer, window)] = seen
    assert sizes[("conv", None)][0] == sizes[("conv", None)][1] == 2 * 3 * 32 * 4  # 2 blocks x (k - 1) x C floats
    assert sizes[("ssm", None)][0] == sizes[("ssm", None)][1]
    assert sizes[("attn_causal", 16)][0] == sizes[("attn_causal", 16)][1]
    small, large = sizes[("attn_causal", None)]
    assert large >= 16 * small * 0.9  # every past key and value: 16x the frames, about 16x the memory


def frames_at(kind: str, offsets: np.ndarray) -> list[np.ndarray]:
    """Frames of the small line with an item of `kind` at `offsets` pixels from the centre (same belt, same marks)."""
    line = Line(LINE)
    belt = LINE.size / 2 - line.item / 2 + offsets
    plan = VideoPlan(belt, [kind] * 3)
    return [line.render(plan, t) for t in range(len(belt))]


def test_different_item_kinds_give_different_embeddings(conv_run):
    detector, _ = load_detector(conv_run[1])
    offsets = np.arange(-6.0, 7.0)
    per_kind = {k: embed_frames(detector.encoder, frames_at(k, offsets)) for k in ITEM_KINDS}
    # the same belt and position, another item: never the same embedding (a collapsed encoder gives distance 0)
    steps = torch.load(conv_run[1] / "embeddings.pt", weights_only=True)["embeddings"][0].diff(dim=0).norm(dim=1)
    for a in per_kind:
        for b in per_kind:
            if a < b:
                assert float((per_kind[a] - per_kind[b]).norm(dim=1).min()) > 0.05 * float(steps.median()), (a, b)
    # and the kind can be read from the embedding: nearest kind centroid (even offsets) for the odd offsets
    centroids = torch.stack([e[::2].mean(0) for e in per_kind.values()])
    hits = sum(int((torch.cdist(e[1::2], centroids).argmin(1) == i).sum()) for i, e in enumerate(per_kind.values()))
    assert hits / (4 * len(offsets[1::2])) >= 0.5  # chance is 0.25


def test_the_predictor_beats_the_code_frequencies_on_normal_video(conv_run):
    data, run = conv_run
    detector, _ = load_detector(run)
    cache = torch.load(run / "embeddings.pt", weights_only=True)
    split, codes = cache["splits"][0], cache["codes"][0]
    # the held-out normal tail, scored as the continuation of its video; horizon 1: frame t + 1 from frames <= t
    nll = detector.surprises(cache["embeddings"][0], codes)[split:, 0]
    frequencies = torch.bincount(codes[:split], minlength=detector.temporal.num_codes).float() + 0.5
    marginal = -(frequencies / frequencies.sum()).log()[codes[split:]]  # knowing nothing of the past
    assert float(nll.mean()) < 0.5 * float(marginal.mean()), (float(nll.mean()), float(marginal.mean()))


def test_calibration_standardises_normal_validation_scores_and_sets_the_quantile_threshold(conv_run):
    data, run = conv_run
    detector, config = load_detector(run)
    cache = torch.load(run / "embeddings.pt", weights_only=True)
    assert cache["splits"] == [split_point(LINE.frames, config["val_fraction"])] == [384]
    scores = detector.combine(detector.surprises(cache["embeddings"][0], cache["codes"][0])[384:]).numpy()
    assert float(detector.threshold) == pytest.approx(float(np.quantile(scores, 0.99)), abs=1e-5)
    # the sum of two standardised surprises: mean 0, sd between 1 (one horizon alone) and 2 (both in lockstep)
    assert abs(float(scores.mean())) < 0.15 and 1.0 < float(scores.std()) < 2.0
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["horizons"] == list(HORIZONS) and calibration["validation_frames"] == 96


def test_train_and_eval_commands_write_and_read_a_run(conv_run, tmp_path, capsys):
    data, run = conv_run
    out = tmp_path / "frame"
    code = main(
        ["anomaly", "train", "--data", str(data), "--mixer", "frame", "--output", str(out)]
        + ["--encoder", str(run), "--image-size", "32", "--threads", "1"]
    )
    assert code == 0 and (out / "detector.pt").is_file() and "frame:" in capsys.readouterr().out
    assert main(["anomaly", "eval", "--run", str(out), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    # the frames a context of --burn-in judges, the warm-up and the recovery after each anomaly apart
    left_out = metrics["warmup"]["frames"] + metrics["recovery"]["frames"]
    assert metrics["frames"] + left_out == LINE.test_frames and metrics["mixer"] == "frame"
    assert metrics["warmup"]["frames"] == json.loads((out / "calibration.json").read_text()).get("burn_in", 56)
    assert set(metrics["auroc_per_kind"]) == {"local", "temporal", "contextual"}
    assert set(metrics["branches"]) == {"combined", "temporal", "patch"}
    assert metrics["branches"]["combined"]["auroc_micro"] == pytest.approx(metrics["auroc_micro"])
    pixels = metrics["pixels"]  # the line writes masks: pixel metrics of the patch branch's maps
    assert pixels["frames"] == LINE.test_frames and 0 <= pixels["map_max_on_defect"] <= 1 and 0 <= pixels["aupro"] <= 1
    assert 0.5 < metrics["pixels_per_kind"]["local"]["pixel_auroc"] <= 1
    scores = np.load(out / "scores" / "test_00.npy")
    labels = np.asarray([int(r.split(",")[1]) for r in (data / "test_labels/test_00.csv").read_text().split()[1:]])
    from sklearn.metrics import roc_auc_score

    from mambaout.anomaly.metrics import judged

    keep = judged(labels, metrics["warmup"]["frames"])  # the frames the run's burn-in judges
    assert metrics["auroc_micro"] == pytest.approx(roc_auc_score(labels[keep], scores[keep]))


def test_print_config_shows_the_resolved_flags(capsys):
    assert main(["anomaly", "train", "--data", "d", "--mixer", "attn_causal", "--window", "64", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "mixer: attn_causal\n" in text and "window: 64\n" in text and "horizons: [1, 8]\n" in text


def test_an_interrupted_run_resumes_to_the_same_detector(conv_run, tmp_path, monkeypatch):
    data, run = conv_run
    reference = build_run(tmp_path, "ssm", encoder=run, name="whole", steps=30)[1]
    import mambaout.engine.run as train_module

    real_save = train_module.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state.get("stage") == "temporal" and state["global_step"] == 10:
            raise KeyboardInterrupt  # killed right after the checkpoint at update 10

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_run(tmp_path, "ssm", encoder=run, name="cut", steps=30, checkpoint_every=10)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    build_run(tmp_path, "ssm", encoder=run, name="cut", steps=30, checkpoint_every=10, resume=True)
    a, b = load_detector(reference)[0].state_dict(), load_detector(tmp_path / "cut")[0].state_dict()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-6


def test_mistakes_end_in_one_sentence(tmp_path, capsys):
    assert main(["anomaly", "train", "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["anomaly", "eval", "--run", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "no trained detector" in capsys.readouterr().err


def test_one_alarm_from_both_branches_false_alarms_at_one_minus_the_quantile_on_normal_video(conv_run):
    data, run = conv_run
    detector, config = load_detector(run)
    assert detector.patch is not None and config["quantile"] == 0.99
    # the validation tail, scored as the continuation of its video (the temporal model has read the frames before)
    raw = detector.branch_scores(list(open_video(data / "train" / "train_00.avi", size=32)))
    raw = {k: raw[k][384:] for k in ("temporal", "patch")}
    z_t, z_p = detector.standardised(raw["temporal"], raw["patch"])
    for z in (z_t, z_p):  # each branch on its own normal scale: median 0, its 0.99 quantile 1
        assert np.quantile(z, [0.5, 0.99]) == pytest.approx([0.0, 1.0], abs=1e-4)
    score = detector.fuse(raw["temporal"], raw["patch"])
    np.testing.assert_allclose(score, np.maximum(z_t, z_p))
    assert float(detector.alarm_threshold) == pytest.approx(float(np.quantile(score, 0.99)), rel=1e-5)
    assert (score > float(detector.alarm_threshold)).sum() == 1  # 1 % of 96 frames
    # on normal video the detector never saw (another stretch of the same line), about 1 % alarm too
    line = Line(dataclasses.replace(LINE, frames=600))
    plan = line.plan_video("train", 7)
    fresh = detector.score_frames(line.render(plan, t) for t in range(600))
    assert (fresh > float(detector.alarm_threshold)).mean() <= 0.04
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["alarm"]["alarm_rate"] == pytest.approx(1 / 96)


def test_training_noise_blurs_the_embeddings_in_training_only():
    from mambaout.anomaly.train import PredictionObjective

    torch.manual_seed(0)
    model = TemporalModel(embed_dim=8, width=16, mixer="ssm", codes=5, horizons=(1, 2))
    x, codes = torch.randn(2, 20, 8), torch.randint(0, 5, (2, 20))
    seen = []
    model.in_proj.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    noisy, clean = PredictionObjective(model, 2, input_noise=0.5), PredictionObjective(model, 2)
    noisy.train()
    noisy(x, codes), noisy(x, codes)
    first, second = seen[0] - x, seen[1] - x  # what the model read, less the embeddings
    assert float(first.std()) == pytest.approx(0.5, rel=0.15) and not torch.equal(first, second)  # a new draw
    noisy.eval()  # scoring and validation read the embeddings as they are
    assert float(noisy(x, codes)) == float(clean.eval()(x, codes)) and torch.equal(seen[-1], x)
    with pytest.raises(UserError, match="--input-noise -1"):
        AnomalyConfig(data="d", input_noise=-1).check()
