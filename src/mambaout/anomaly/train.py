"""`mambaout anomaly train` and `eval`: a detector from normal video, on the engine, and its metrics on test video.

A run is two trainings on the engine (`mambaout.engine.run`: seeded data order, atomic checkpoints that resume
exactly, also mid-stage) and one calibration:

1. the encoder (`encoder.py`) on normal training frames, unless `--encoder RUN` reuses another run's (then every
   mixer sees the same embeddings); the embeddings of the training videos are computed once and cached
   (`embeddings.pt`);
   and its frame codes (k-means of the frames' thumbnails, `FrameEncoder.fit_codes`);
2. the temporal model (`temporal.py`) on windows of `burn_in + seq_len` embeddings of the training part of each
   normal video (the first 1 - val_fraction of its frames), the loss on the last `seq_len` frames of each window only
   (the first `burn_in` fill the context), or for `frame` the k-NN bank;
3. the patch branch (`patch.py`): the k-center coreset of the patch features of `patch_frames` normal training frames
   drawn at random (no training; `--patch-bank 0` leaves it out);
4. calibration (`detector.py`) on the held-out tail of every normal video, scored as the continuation of its video
   (the model has read the training part first, as a stream would): standardisation per horizon, then of each branch,
   and the alarm threshold.

The run folder holds config.yaml, log.jsonl, encoder.pt, embeddings.pt, last.pt (the stage in progress),
detector.pt (what `eval` and `watch` load) and calibration.json; `eval` adds eval.json and scores/<video>.npy.
`save_detector` (stage 4 and the writing) is also what each line run of `mambaout study` ends with, so a study's
run folder holds the same detector.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from mambaout.anomaly.config import AnomalyConfig
from mambaout.anomaly.detector import Detector
from mambaout.anomaly.encoder import FrameEncoder, ReconstructionObjective, batched, encode_frames
from mambaout.anomaly.patch import PatchBranch, build_patch_branch, frame_scores
from mambaout.anomaly.temporal import FrameKNN, TemporalModel, code_loss, matched_widths
from mambaout.engine.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from mambaout.engine.config import to_dict, to_yaml
from mambaout.engine.run import OptimizerSpec, RunConfig, RunState, ScheduleSpec, Task, run
from mambaout.engine.runtime import Runtime, intra_op_threads, seed_all, setup_runtime
from mambaout.errors import UserError

DETECTOR_FILE = "detector.pt"


# -- the data ---------------------------------------------------------------------------------------------------
def split_point(frames: int, val_fraction: float) -> int:
    """Frames [0, split) of a normal video train, [split, frames) calibrate."""
    return max(1, min(frames - 1, round(frames * (1 - val_fraction))))


def read_frames(video, size: int, keep=None) -> np.ndarray:
    """The decoded frames of a LabelledVideo (uint8 (n, size, size, 3)), only positions in `keep` if given."""
    with video.open(size=size) as source:
        frames = [f for i, f in source.indexed() if keep is None or i in keep]
    return np.stack(frames) if frames else np.zeros((0, size, size, 3), np.uint8)


class Windows(Dataset):
    """Windows of `seq_len` consecutive (embeddings, codes) from each sequence, starting every `stride` frames."""

    def __init__(self, sequences: list[torch.Tensor], codes: list[torch.Tensor], seq_len: int, stride: int):
        self.sequences, self.codes, self.seq_len = sequences, codes, seq_len
        self.index = [(i, s) for i, e in enumerate(sequences) for s in range(0, len(e) - seq_len + 1, stride)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        v, start = self.index[i]
        return self.sequences[v][start : start + self.seq_len], self.codes[v][start : start + self.seq_len]


class PredictionObjective(nn.Module):
    """What the engine trains for a temporal model: forward(windows (B, L, D), codes (B, L)) = the NLL of each
    frame's code under the predictions made h frames before, on frames >= burn_in, averaged over horizons.

    In training, Gaussian noise of std `input_noise` is added to the (standardised) embeddings: a frame's fine
    detail (the belt's texture) tells exactly where in a training video it is, and a model with memory otherwise
    learns the training videos by heart instead of the line (on the built-in line without noise: training loss 0.01
    nats, validation 2.0, memory probe 68 %; with noise 1.0: 0.87 and 1.0 nats, probe 96 %; docs/anomaly.md)."""

    def __init__(self, model: TemporalModel, burn_in: int, input_noise: float = 0.0):
        super().__init__()
        self.model, self.burn_in, self.input_noise = model, burn_in, input_noise

    def forward(self, windows: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        if self.training and self.input_noise:
            windows = windows + self.input_noise * torch.randn_like(windows)
        return code_loss(self.model(windows), codes, self.model.horizons, self.burn_in)


# -- a training stage: a task of the engine's driver ---------------------------------------------------------------
class Stage(Task):
    """One stage of a detector (the encoder, the temporal model): `objective` (forward(batch) = loss) on `dataset`,
    AdamW and a cosine from `lr` down to 1 % of it."""

    advice = "lower its learning rate, then --resume"

    def __init__(
        self,
        name: str,
        cfg: AnomalyConfig,
        objective: nn.Module,
        dataset: Dataset,
        device: torch.device,
        lr: float,
        steps: int,
    ):
        self.name, self.cfg, self.objective, self.dataset, self.device = name, cfg, objective, dataset, device
        self.steps = steps
        self.optimizer = OptimizerSpec("adamw", lr, cfg.weight_decay)
        # the warm-up ends before the run does
        self.schedule = ScheduleSpec(min(cfg.warmup_steps, steps - 1), warmup_lr=1e-6, min_lr=lr * 1e-2)

    def model(self) -> nn.Module:
        return self.objective

    def train_data(self) -> Dataset:
        return self.dataset

    def loss(self, forward: nn.Module, batch: Any) -> torch.Tensor:
        return forward(*(b.to(self.device) for b in ((batch,) if torch.is_tensor(batch) else batch)))

    def config(self, runtime: Runtime) -> AnomalyConfig:
        return self.cfg

    def on_start(self, run: RunState) -> None:
        if run.resumed:
            run.runtime.log(f"{self.name}: resumed at update {run.progress.global_step}/{self.steps}")


def train_stage(stage: Stage, rt: Runtime, out: Path, batch_size: int) -> list[float]:
    """Train `stage` for its steps; returns the losses. last.pt is written every `checkpoint_every` updates and
    at the end; with `resume` a last.pt of this stage is continued exactly where it stopped."""
    if len(stage.dataset) == 0:
        raise UserError(f"the {stage.name} stage has no training data; give longer or more normal training videos")
    cfg = stage.cfg
    config = RunConfig(
        updates=stage.steps,
        batch_size=min(batch_size, len(stage.dataset)),
        runtime=rt,
        seed=cfg.seed,
        output=out,
        stage=stage.name,
        resume=cfg.resume,
        overwrite=True,  # train_detector refuses a folder with an unfinished run unless resuming
        checkpoint_every=cfg.checkpoint_every,
        checkpoint_epochs=False,
        desc=stage.name,
    )
    return run(stage, config).losses


# -- the run ------------------------------------------------------------------------------------------------------
def encoder_args(cfg: AnomalyConfig) -> dict[str, Any]:
    return dict(
        backbone=cfg.backbone,
        embed_dim=cfg.embed_dim,
        recon_size=cfg.recon_size,
        codes=cfg.codes,
        code_size=cfg.code_size,
        motion_size=cfg.image_size if cfg.motion else 0,
    )


def temporal_args(cfg: AnomalyConfig, embed_dim: int) -> dict[str, Any]:
    common = dict(depth=cfg.depth, kernel_size=cfg.kernel_size, horizons=tuple(cfg.horizons), codes=cfg.codes)
    width = matched_widths(embed_dim, cfg.width, (cfg.mixer,), **common)[cfg.mixer]
    return dict(embed_dim=embed_dim, width=width, mixer=cfg.mixer, window=cfg.window, **common)


def train_encoder(cfg: AnomalyConfig, rt: Runtime, data, out: Path) -> tuple[FrameEncoder, dict]:
    """Stage 1: the encoder and the cached, standardised embeddings of every normal training video (the stage's lines
    go to `out`/log.jsonl through the engine)."""
    if (out / "encoder.pt").is_file() and (out / "embeddings.pt").is_file():
        return load_encoder(out)
    splits = [split_point(v.frame_count, cfg.val_fraction) for v in data.train]
    total = sum(splits)
    every = max(1, math.ceil(total / cfg.encoder_frames))
    kept = [read_frames(v, cfg.image_size, set(range(0, s, every))) for v, s in zip(data.train, splits)]
    frames = np.concatenate(kept)
    rt.log(f"encoder {cfg.backbone}: {len(frames)} normal frames at {cfg.image_size}x{cfg.image_size}")
    seed_all(cfg.seed)
    encoder = FrameEncoder(pretrained=cfg.pretrained or None, **encoder_args(cfg)).to(rt.device)
    objective = ReconstructionObjective(encoder)
    dataset = TensorDataset(torch.from_numpy(frames))
    stage = Stage("encoder", cfg, objective, dataset, rt.device, cfg.encoder_lr, cfg.encoder_steps)
    train_stage(stage, rt, out, cfg.encoder_batch_size)
    encoder.fit_codes(torch.from_numpy(frames), cfg.seed)
    if encoder.motion is not None:
        parts = (read_frames(v, cfg.image_size, set(range(s))) for v, s in zip(data.train, splits))
        facts = encoder.motion.fit_normal(frames, parts)
        rt.log(f"motion: normal shifts (dy, dx) {facts['normal_shifts']} over {facts['pairs']:,} frame pairs")
    raw, codes, motion = zip(*(encode_frames(encoder, read_frames(v, cfg.image_size), raw=True) for v in data.train))
    encoder.set_statistics(torch.cat([r[:s] for r, s in zip(raw, splits)]))
    embeddings = [(r - encoder.embed_mean.cpu()) / encoder.embed_std.cpu() for r in raw]
    cache = dict(
        names=[v.name for v in data.train],
        splits=splits,
        embeddings=embeddings,
        codes=list(codes),
        motion=list(motion) if encoder.motion is not None else None,
        image_size=cfg.image_size,
    )
    save_checkpoint(out / "embeddings.pt", cache)
    save_checkpoint(out / "encoder.pt", dict(args=encoder.args, state_dict=encoder.state_dict()))
    return encoder, cache


def load_encoder(run: Path) -> tuple[FrameEncoder, dict]:
    """The encoder of a run folder and its cached training embeddings."""
    for name in ("encoder.pt", "embeddings.pt"):
        if not (run / name).is_file():
            raise UserError(f"{run} holds no {name}; --encoder takes a run folder of `mambaout anomaly train`")
    saved = load_checkpoint(run / "encoder.pt")
    encoder = FrameEncoder(**saved["args"])
    encoder.load_state_dict(saved["state_dict"])
    return encoder, load_checkpoint(run / "embeddings.pt")


def build_temporal(cfg: AnomalyConfig, cache: dict, rt: Runtime, out: Path) -> tuple[nn.Module, dict]:
    """Stage 2: the temporal model trained on windows of the training parts (or the k-NN bank for `frame`; the
    stage's lines go to `out`/log.jsonl through the engine)."""
    train_parts = [e[:s] for e, s in zip(cache["embeddings"], cache["splits"])]
    embed_dim = train_parts[0].shape[1]
    if cfg.mixer == "frame":
        bank = torch.cat(train_parts)
        bank = bank[torch.linspace(0, len(bank) - 1, min(cfg.knn_bank, len(bank))).long()]
        return FrameKNN(bank, cfg.knn), dict(bank_size=len(bank), embed_dim=embed_dim, k=cfg.knn)
    seq_len = min(cfg.burn_in + cfg.seq_len, min(len(p) for p in train_parts))
    if seq_len <= cfg.burn_in:
        raise UserError(
            f"the normal training videos give windows of {seq_len} frames, no more than --burn-in {cfg.burn_in}; "
            "give longer videos or lower --burn-in"
        )
    args = temporal_args(cfg, embed_dim)
    seed_all(cfg.seed + 1)
    model = TemporalModel(**args).to(rt.device)
    n_params = sum(p.numel() for p in model.parameters())
    rt.log(f"temporal {cfg.mixer}: width {args['width']}, depth {cfg.depth}, {n_params:,} parameters, {seq_len} frames")
    codes = [c[:s].to(rt.device) for c, s in zip(cache["codes"], cache["splits"])]
    windows = Windows([p.to(rt.device) for p in train_parts], codes, seq_len, max(1, (seq_len - cfg.burn_in) // 8))
    objective = PredictionObjective(model, cfg.burn_in, cfg.input_noise)
    stage = Stage("temporal", cfg, objective, windows, rt.device, cfg.lr, cfg.steps)
    losses = train_stage(stage, rt, out, cfg.batch_size)
    args["final_loss"] = float(np.mean(losses[-max(1, len(losses) // 10) :])) if losses else None
    return model, args


def build_patch_stage(cfg: AnomalyConfig, data, splits: list[int], rt: Runtime) -> tuple[PatchBranch | None, dict]:
    """Stage 3: the patch branch's bank from `patch_frames` training frames drawn at random (a regular stride can
    alias with the line's motion and leave whole positions out), or None with `--patch-bank 0`."""
    if not cfg.patch_bank:
        return None, {}
    rng = np.random.default_rng([cfg.seed, 3])
    offsets = np.cumsum([0, *splits])
    drawn = np.sort(rng.choice(offsets[-1], min(cfg.patch_frames, offsets[-1]), replace=False))
    keep = [set((drawn[(drawn >= a) & (drawn < b)] - a).tolist()) for a, b in zip(offsets[:-1], offsets[1:])]
    frames = np.concatenate([read_frames(v, cfg.image_size, k) for v, k in zip(data.train, keep) if k])
    extractor = dict(backbone=cfg.backbone, pretrained=cfg.pretrained) if cfg.pretrained else dict(seed=cfg.seed)
    branch, facts = build_patch_branch(batched(frames, 64), extractor, cfg.patch_bank, cfg.seed)
    rt.log(
        f"patch branch: {facts['bank']} of {facts['patches']:,} normal patches ({facts['dim']} dims), covering "
        f"radius {facts['covering_radius']:.3f}"
    )
    return branch, dict(facts, frames=len(frames))


def validation_patch_scores(cfg: AnomalyConfig, patch: PatchBranch, data, splits: list[int]) -> list[np.ndarray]:
    """The patch branch's frame scores on the held-out tail of every normal video."""
    out = []
    for video, s in zip(data.train, splits):
        frames = read_frames(video, cfg.image_size, set(range(s, video.frame_count)))
        out.append(torch.cat([frame_scores(patch.maps(b)) for b in batched(frames, 64)]).numpy())
    return out


def normal_videos(cache: dict) -> list[tuple]:
    """(embeddings, codes, motion scores or None) of every whole normal video of an encoder's cache."""
    motion = cache.get("motion") or [None] * len(cache["embeddings"])
    return list(zip(cache["embeddings"], cache["codes"], motion))


def calibrate_alarm(
    cfg: AnomalyConfig, detector: Detector, data, cache: dict, patch: list[np.ndarray] | None = None
) -> dict:
    """Both branches' scores on the held-out tail of every normal video (the temporal one as the continuation of its
    video; the patch one's given as `patch` or computed); the alarm threshold."""
    temporal = [detector.score_embeddings(*video)[s:] for video, s in zip(normal_videos(cache), cache["splits"])]
    if detector.patch is not None and patch is None:
        patch = validation_patch_scores(cfg, detector.patch, data, cache["splits"])
    return detector.calibrate_alarm(temporal, patch if detector.patch is not None else None, cfg.quantile)


def save_detector(
    cfg: AnomalyConfig,
    encoder: FrameEncoder,
    temporal: nn.Module,
    args: dict[str, Any],
    data,
    cache: dict,
    patch: PatchBranch | None = None,
    patch_facts: dict | None = None,
    started: float | None = None,
    patch_validation: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Stage 4 and the run's detector: calibrate the detector of `encoder`, `temporal` (its `args`) and `patch` on the
    held-out tails of the normal videos (`calibrate_alarm`), then write `cfg.output`/detector.pt (what `load_detector`,
    `eval` and `watch` read), calibration.json and config.yaml, atomically, and drop the stage checkpoint last.pt.
    Returns the calibration (with params, and train_seconds since the `time.perf_counter()` value `started`);
    `patch_validation`: the patch branch's validation scores when already computed.

    Every run folder with a detector is written here: `mambaout anomaly train`'s and each line run of the study.

    Example:
        >>> save_detector(cfg, encoder, temporal, args, load_dataset(cfg.data), cache, patch)  # doctest: +SKIP
    """
    out = Path(cfg.output)
    detector = Detector(encoder.cpu(), temporal.cpu(), cfg.mixer, patch)
    calibration = detector.calibrate(normal_videos(cache), cache["splits"], cfg.quantile)
    alarm = calibrate_alarm(cfg, detector, data, cache, patch_validation)
    calibration.update(alarm=alarm, patch=patch_facts or {})
    params = sum(p.numel() for p in temporal.parameters())
    seconds = time.perf_counter() - started if started is not None else None
    calibration.update(params=params, train_seconds=seconds, temporal=args)
    state = dict(
        kind="mambaout-anomaly-detector",
        config=to_dict(cfg),
        encoder_args=encoder.args,
        temporal_args=args,
        mixer=cfg.mixer,
        patch_args=patch.args if patch is not None else None,
        state_dict=detector.state_dict(),
    )
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / DETECTOR_FILE, state)
    text = json.dumps(calibration, indent=2, default=str) + "\n"
    atomic_write(out / "calibration.json", lambda f: f.write(text.encode()))
    atomic_write(out / "config.yaml", lambda f: f.write(to_yaml(cfg).encode()))
    if (out / "last.pt").is_file():
        (out / "last.pt").unlink()
    return calibration


def train_detector(cfg: AnomalyConfig) -> dict[str, Any]:
    """Train a detector as `cfg` says; returns {"run", "calibration", "params", "train_seconds"}.

    Example:
        >>> train_detector(AnomalyConfig(data="line_data", mixer="ssm", output="runs/line_ssm"))  # doctest: +SKIP
    """
    from mambaout.video import load_dataset

    cfg.check()
    out = Path(cfg.output)
    if (out / DETECTOR_FILE).is_file() and not cfg.resume:
        raise UserError(f"{out} already holds a trained detector; choose another --output (or --resume to keep it)")
    if (out / "last.pt").is_file() and not cfg.resume:
        raise UserError(f"{out} holds an unfinished run; continue it with --resume or choose another --output")
    if (out / DETECTOR_FILE).is_file():
        return dict(run=str(out), calibration=json.loads((out / "calibration.json").read_text()), resumed=True)
    data = load_dataset(cfg.data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    start = time.perf_counter()
    with intra_op_threads(cfg.threads):
        rt = setup_runtime(cfg.device, cfg.amp)
        if cfg.encoder:
            encoder, cache = load_encoder(Path(cfg.encoder))
            if cache["names"] != [v.name for v in data.train]:
                raise UserError(f"the encoder run {cfg.encoder} was trained on other videos; train without --encoder")
        else:
            encoder, cache = train_encoder(cfg, rt, data, out)
        temporal, args = build_temporal(cfg, cache, rt, out)
        patch, patch_facts = build_patch_stage(cfg, data, cache["splits"], rt)
        calibration = save_detector(cfg, encoder, temporal, args, data, cache, patch, patch_facts, start)
    return dict(
        run=str(out), calibration=calibration, params=calibration["params"], train_seconds=calibration["train_seconds"]
    )
