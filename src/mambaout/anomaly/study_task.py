"""The study's line task: anomaly detection on the built-in conveyor line (or a user's video), one model per mixer.

Causal and long: a frame is judged from the past only, and the contextual anomalies need a cycle of memory
(`context_frames`, 144 frames by default, against the conv's depth·(k - 1) = 6). The encoder is trained once per
task (on the engine) and every frame embedded once, so all mixers and seeds see the same embeddings; what a run
trains is the temporal model, on windows of `seq_len` embeddings, with the loss of `PredictionObjective`, and what
it is measured by is frame AUROC on the test videos (overall and per anomaly kind) after calibration on normal
validation video. `frame` (k-NN, no temporal model) has nothing to train.

It speaks the interface of the study's tasks (`name`, `causal`, `mixers`, `budgets`, `config`, `build_model`,
`train_batches`, `loss`, `evaluate`, `mixer_tokens`, `sample_input`, `mixer_kwargs`) and also runs a whole
(mixer, seed) itself with `run_one`, which trains through `mambaout.engine` and reports the per-kind AUROC and the
streaming cost (what `mambaout study` tabulates for this task).

Example:
    >>> task = LineTask()  # doctest: +SKIP  (generates the line, trains the encoder: ~1 min on 2 cores)
    >>> task.run_one("ssm", seed=0, budget=task.budgets["default"])["auroc_per_kind"]  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mambaout.anomaly.config import AnomalyConfig
from mambaout.anomaly.detector import Detector
from mambaout.anomaly.encoder import encode_frames
from mambaout.anomaly.temporal import FrameKNN, TemporalModel, state_bytes
from mambaout.anomaly.train import PredictionObjective, Windows, build_temporal, temporal_args, train_encoder
from mambaout.engine.records import RunLog


class LineTask:
    """Conv vs SSM vs causal attention (vs frame-only) as temporal models of one anomaly detector."""

    name = "line"
    causal = True
    mixers = ("conv", "ssm", "attn_causal", "frame")
    budgets = {
        "small": dict(steps=20, batch_size=4, lr=3e-3, warmup_steps=2, encoder_steps=30),
        "default": dict(steps=200, batch_size=8, lr=3e-3, warmup_steps=10, encoder_steps=300),
        "full": dict(steps=800, batch_size=16, lr=3e-3, warmup_steps=40, encoder_steps=600),
    }

    def __init__(
        self,
        data: str | Path | None = None,
        work_dir: str | Path | None = None,
        budget: str = "default",
        line: dict[str, Any] | None = None,
        **config: Any,
    ):
        """`data`: a dataset root (default: the built-in line, generated under `work_dir` from `line` keywords);
        `config`: AnomalyConfig fields (width, depth, horizons, seq_len, image_size, ...)."""
        from mambaout.anomaly.line import LineConfig, generate_line
        from mambaout.engine.runtime import setup_runtime
        from mambaout.video import load_dataset

        self.work = Path(work_dir or tempfile.mkdtemp(prefix="mambaout_line_"))
        self.meta = None
        if data is None:
            data = self.work / "line_data"
            if not (data / "meta.json").is_file():
                self.meta = generate_line(data, LineConfig(**(line or {})))
        meta_path = Path(data) / "meta.json"
        if self.meta is None and meta_path.is_file():
            import json

            self.meta = json.loads(meta_path.read_text())
        steps = self.budgets[budget]["encoder_steps"] if isinstance(budget, str) else 300
        if self.meta and "burn_in" not in config:  # a cycle and an item of the line: its whole context
            line_cfg = self.meta["config"]
            config["burn_in"] = (line_cfg["period"] + 1) * line_cfg["spacing"]
        self.cfg = AnomalyConfig(data=str(data), output=str(self.work / "encoder"), encoder_steps=steps, **config)
        self.cfg.check()
        self.rt = setup_runtime(self.cfg.device, self.cfg.amp)
        self.dataset = load_dataset(data)
        out = Path(self.cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        self.encoder, self.cache = train_encoder(self.cfg, self.rt, self.dataset, out, RunLog(out))
        self.encoder = self.encoder.cpu().eval()
        self.test = []  # (embeddings, codes, labels, kinds) of the decoded frames of every test video
        for video in self.dataset.test:
            with video.open(size=self.cfg.image_size) as source:
                indexed = list(source.indexed())
            keep = [i for i, _ in indexed]
            e, c = encode_frames(self.encoder, [f for _, f in indexed])
            self.test.append((e, c, video.labels[keep], video.kinds[keep] if video.kinds is not None else None))
        self.encoder_seconds = time.perf_counter() - start
        self.train_parts = [e[:s] for e, s in zip(self.cache["embeddings"], self.cache["splits"])]
        self.train_codes = [c[:s] for c, s in zip(self.cache["codes"], self.cache["splits"])]
        self.normal = list(zip(self.cache["embeddings"], self.cache["codes"]))  # whole normal videos
        self.seq_len = min(self.cfg.burn_in + self.cfg.seq_len, min(len(p) for p in self.train_parts))
        self.embed_dim = self.train_parts[0].shape[1]
        self.mixer_kwargs: dict[str, dict] = {}

    # -- the study's task interface -----------------------------------------------------------------------------
    def estimate_seconds(self, mixer: str, budget: dict[str, Any]) -> float:
        """Expected seconds of one run on a 2-core CPU at one thread (measured: ~0.05 s an update at batch 8)."""
        return 0.5 if mixer == "frame" else 2.0 + budget["steps"] * budget["batch_size"] / 8 * 0.05

    def config(self) -> dict[str, Any]:
        meta = self.meta or {}
        return dict(
            task=self.name,
            data=self.cfg.data,
            frames_test=sum(len(e) for e, *_ in self.test),
            embed_dim=self.embed_dim,
            width=self.cfg.width,
            depth=self.cfg.depth,
            kernel_size=self.cfg.kernel_size,
            horizons=list(self.cfg.horizons),
            seq_len=self.seq_len,
            conv_reach=self.cfg.depth * (self.cfg.kernel_size - 1),
            context_frames=meta.get("context_frames"),
            cycle_frames=meta.get("cycle_frames"),
            encoder=self.cfg.backbone,
            encoder_seconds=round(self.encoder_seconds, 1),
            causal=self.causal,
        )

    def build_model(self, mixer: str) -> nn.Module:
        if mixer == "frame":
            cfg = AnomalyConfig(**{**vars(self.cfg), "mixer": "frame"})
            return build_temporal(cfg, self.cache, self.rt, Path(self.cfg.output), RunLog(None))[0]
        return TemporalModel(**temporal_args(AnomalyConfig(**{**vars(self.cfg), "mixer": mixer}), self.embed_dim))

    def mixer_tokens(self) -> tuple[int, int]:
        """(frames of a test video: the sequence each model reads, the residual width)."""
        return len(self.test[0][0]), self.cfg.width

    def sample_input(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, self.seq_len, self.embed_dim)

    def train_batches(self, steps: int, batch_size: int, generator: torch.Generator) -> Iterator[tuple]:
        windows = Windows(self.train_parts, self.train_codes, self.seq_len, max(1, self.cfg.seq_len // 8))
        for _ in range(steps):
            picks = torch.randint(len(windows), (batch_size,), generator=generator)
            x, y = zip(*(windows[int(i)] for i in picks))
            yield torch.stack(x), torch.stack(y)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return PredictionObjective(model, self.cfg.burn_in)(x, y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device | None = None) -> tuple[float, int]:
        """(frame AUROC over all test frames, number of test frames)."""
        metrics = self.metrics(model)
        return metrics["auroc_micro"], metrics["frames"]

    # -- what the line adds --------------------------------------------------------------------------------------
    @torch.no_grad()
    def metrics(self, model: nn.Module) -> dict[str, Any]:
        """Calibrate on normal validation video, score every test video: the metrics module's dict."""
        from mambaout.anomaly.metrics import frame_metrics

        mixer = "frame" if isinstance(model, FrameKNN) else model.mixer
        detector = Detector(self.encoder, model.cpu().eval(), mixer)
        detector.calibrate(self.normal, self.cache["splits"], self.cfg.quantile)
        scores = [detector.score_embeddings(e, c) for e, c, _, _ in self.test]
        kinds = [k for *_, k in self.test]
        has_kinds = all(k is not None for k in kinds)
        out = frame_metrics(
            scores, [y for _, _, y, _ in self.test], kinds if has_kinds else None, float(detector.threshold)
        )
        out["scores"] = scores
        return out

    def stream_cost(self, model: nn.Module, frames: tuple[int, ...] = (100, 1000, 10000)) -> dict[str, Any]:
        """Temporal step latency (ms, median of the last 50 steps) and state bytes after each count of frames."""
        if isinstance(model, FrameKNN):
            x = torch.randn(1, self.embed_dim)
            t0 = time.perf_counter()
            for _ in range(50):
                model(x)
            ms = (time.perf_counter() - t0) / 50 * 1000
            return {n: dict(step_ms=ms, state_bytes=0) for n in frames}
        model = model.cpu().eval()
        state, out, times = model.init_state(1), {}, []
        with torch.no_grad():
            for t in range(1, max(frames) + 1):
                x = torch.randn(1, self.embed_dim)
                t0 = time.perf_counter()
                _, state = model.step(x, state)
                times.append(time.perf_counter() - t0)
                if t in frames:
                    out[t] = dict(step_ms=float(np.median(times[-50:])) * 1000, state_bytes=state_bytes(state))
        return out

    def run_one(
        self,
        mixer: str,
        seed: int,
        budget: dict[str, Any],
        out_dir: str | Path | None = None,
        stream_frames: tuple[int, ...] = (100, 1000, 10000),
    ) -> dict:
        """Train (through the engine) and measure one (mixer, seed): AUROC overall and per kind, params, and the
        streaming cost after `stream_frames` frames (empty: not measured; once per mixer is enough)."""
        from mambaout.engine.runtime import seed_all

        out = Path(out_dir or self.work / f"{mixer}-seed{seed}")
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        cfg = AnomalyConfig(
            **{
                **vars(self.cfg),
                "mixer": mixer,
                "seed": seed,
                "output": str(out),
                "steps": budget["steps"],
                "batch_size": budget["batch_size"],
                "lr": budget["lr"],
                "warmup_steps": budget.get("warmup_steps", 0),
                "checkpoint_every": 0,
            }
        )
        seed_all(seed)
        model, args = build_temporal(cfg, self.cache, self.rt, out, RunLog(out))
        seconds = time.perf_counter() - start
        metrics = self.metrics(model)
        params = sum(p.numel() for p in model.parameters())
        return dict(
            task=self.name,
            mixer=mixer,
            seed=seed,
            steps=0 if mixer == "frame" else budget["steps"],
            train_seconds=seconds,
            accuracy=metrics["auroc_micro"],
            eval_count=metrics["frames"],
            auroc_micro=metrics["auroc_micro"],
            auroc_macro=metrics["auroc_macro"],
            average_precision=metrics["average_precision"],
            auroc_per_kind=metrics.get("auroc_per_kind", {}),
            false_alarms_per_hour=metrics["false_alarms_per_hour"],
            params=params,
            width=args.get("width"),
            final_loss=args.get("final_loss"),
            stream=self.stream_cost(model, stream_frames) if stream_frames else {},
            timeline=self.timeline(metrics),
        )

    def timeline(self, metrics: dict[str, Any], video: int = 0) -> dict[str, Any]:
        """One test video's scores with its labels, kinds and the alarm threshold, for the report's timeline plot."""
        _, _, labels, kinds = self.test[video]
        return dict(
            video=self.dataset.test[video].name,
            scores=[round(float(v), 4) for v in metrics["scores"][video]],
            labels=[int(v) for v in labels],
            kinds=[str(k) for k in kinds] if kinds is not None else None,
            threshold=metrics.get("threshold"),
        )
