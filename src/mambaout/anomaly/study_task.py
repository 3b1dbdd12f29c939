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

import dataclasses
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
from mambaout.anomaly.encoder import batched, encode_frames
from mambaout.anomaly.patch import frame_scores
from mambaout.anomaly.temporal import FrameKNN, TemporalModel, state_bytes, stream_checkpoints
from mambaout.anomaly.train import (
    PredictionObjective,
    Windows,
    build_patch_stage,
    build_temporal,
    calibrate_alarm,
    normal_videos,
    temporal_args,
    train_encoder,
    validation_patch_scores,
)


class LineTask:
    """Conv vs SSM vs causal attention (vs frame-only) as temporal models of one anomaly detector."""

    name = "line"
    causal = True
    mixers = ("conv", "ssm", "attn_causal", "frame")
    budgets = {
        "small": dict(steps=20, batch_size=4, lr=3e-3, warmup_steps=2, encoder_steps=30),
        "default": dict(
            steps=400, batch_size=8, lr=3e-3, warmup_steps=20, encoder_steps=300, lrs=(3e-3, 1e-2), sweep_steps=50
        ),
        "full": dict(
            steps=1200,
            batch_size=16,
            lr=3e-3,
            warmup_steps=40,
            encoder_steps=600,
            lrs=(3e-3, 1e-2),
            sweep_steps=200,
        ),
    }
    replicates = 200  # bootstrap resamples of the test events per run (the report pairs them across mixers)

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
        # CPU seconds of this process per part of the set-up that every run shares (`config()["set_up_cpu_seconds"]`)
        self.set_up_cpu_seconds: dict[str, float] = {}
        clock = time.process_time()
        if data is None:
            data = self.work / "line_data"
            if not (data / "meta.json").is_file():
                self.meta = generate_line(data, LineConfig(**(line or {})))
                self.set_up_cpu_seconds["video"] = time.process_time() - clock
        meta_path = Path(data) / "meta.json"
        if self.meta is None and meta_path.is_file():
            import json

            self.meta = json.loads(meta_path.read_text())
        steps = self.budgets[budget]["encoder_steps"] if isinstance(budget, str) else 300
        if self.meta:
            line_cfg = self.meta["config"]
            # a cycle and an item of the line: its whole context; horizons of one frame and of one item's spacing
            config.setdefault("burn_in", (line_cfg["period"] + 1) * line_cfg["spacing"])
            config.setdefault("horizons", (1, line_cfg["spacing"]))
        self.cfg = AnomalyConfig(data=str(data), output=str(self.work / "encoder"), encoder_steps=steps, **config)
        self.cfg.check()
        self.rt = setup_runtime(self.cfg.device, self.cfg.amp)
        self.dataset = load_dataset(data)
        out = Path(self.cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        clock = time.process_time()
        self.encoder, self.cache = train_encoder(self.cfg, self.rt, self.dataset, out)
        self.encoder = self.encoder.cpu().eval()
        self.set_up_cpu_seconds["encoder"], clock = time.process_time() - clock, time.process_time()
        # the patch branch of every run's detector: no training, so built once, like the encoder, and its scores on
        # the normal validation frames and every test frame computed once
        self.patch, self.patch_facts = build_patch_stage(self.cfg, self.dataset, self.cache["splits"], self.rt)
        self.patch_validation = (
            validation_patch_scores(self.cfg, self.patch, self.dataset, self.cache["splits"]) if self.patch else None
        )
        self.set_up_cpu_seconds["patch_bank"], clock = time.process_time() - clock, time.process_time()
        self.test = []  # (embeddings, codes, labels, kinds) of the decoded frames of every test video
        self.test_patch = []  # the patch branch's frame scores of the same frames
        self.test_motion = []  # their motion scores (None without a motion model)
        for video in self.dataset.test:
            with video.open(size=self.cfg.image_size) as source:
                indexed = list(source.indexed())
            keep = [i for i, _ in indexed]
            frames = [f for _, f in indexed]
            e, c, m = encode_frames(self.encoder, frames)
            self.test_motion.append(m)
            self.test.append((e, c, video.labels[keep], video.kinds[keep] if video.kinds is not None else None))
            if self.patch is not None:
                with torch.no_grad():
                    self.test_patch.append(
                        torch.cat([frame_scores(self.patch.maps(b)) for b in batched(frames, 64)]).numpy()
                    )
        self.set_up_cpu_seconds["test_frames"] = time.process_time() - clock
        self.train_parts = [e[:s] for e, s in zip(self.cache["embeddings"], self.cache["splits"])]
        self.train_codes = [c[:s] for c, s in zip(self.cache["codes"], self.cache["splits"])]
        self.normal = normal_videos(self.cache)  # whole normal videos
        self.seq_len = min(self.cfg.burn_in + self.cfg.seq_len, min(len(p) for p in self.train_parts))
        self.embed_dim = self.train_parts[0].shape[1]
        self.mixer_kwargs: dict[str, dict] = {}
        self.events = [self._events(video.name, len(t[0])) for video, t in zip(self.dataset.test, self.test)]
        self.ceilings, self.positions, self.embedding_probe = {}, None, None
        if self.meta and "config" in self.meta and self.meta.get("generator") == "mambaout anomaly generate":
            self._line_references()

    def _events(self, video: str, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """(event index per frame, -1 on normal frames; subtype per frame) of a test video of the built-in line."""
        event_of, subtype = np.full(frames, -1), np.full(frames, "", dtype="<U20")
        for i, e in enumerate(((self.meta or {}).get("videos", {}).get(video) or {}).get("intervals", [])):
            event_of[e["start"] : e["end"]], subtype[e["start"] : e["end"]] = i, e["subtype"]
        return event_of, subtype

    def _line_references(self) -> None:
        """The built-in line's exact references: the short-memory ceiling and the cycle-memory ideal per contextual
        subtype (`ceiling.py`), and the memory probe's targets (items since the last marker) on normal video."""
        from mambaout.anomaly.ceiling import short_memory_ceiling
        from mambaout.anomaly.line import Line, LineConfig
        from mambaout.anomaly.probe import memory_probe

        line_cfg = LineConfig(**self.meta["config"])
        reach = self.cfg.depth * (self.cfg.kernel_size - 1)
        window = max(self.cfg.horizons) + reach  # what a conv detector's score at frame t can have read
        self.ceilings = dict(
            window=window,
            short=short_memory_ceiling(line_cfg, window, self.cfg.burn_in),
            cycle=short_memory_ceiling(line_cfg, window + line_cfg.cycle_frames, self.cfg.burn_in),
        )
        line = Line(line_cfg)
        period = line_cfg.period
        self.positions = []
        for i in range(len(self.dataset.train)):
            pos = line.cycle_positions(line.plan_video("train", i))[: len(self.cache["embeddings"][i])]
            self.positions.append(np.where(pos >= 0, (pos + 1) % period, -1))
        features = [e.numpy() for e in self.cache["embeddings"]]
        self.embedding_probe = memory_probe(features, self.positions, self.cache["splits"], self.cfg.burn_in)

    # -- the study's task interface -----------------------------------------------------------------------------
    def run_updates(self, mixer: str, budget: dict[str, Any], seeds: int = 1) -> float:
        """Training updates of one run, for the study's ETA (the study times a few of them on this machine): the
        budget's steps, plus the learning-rate sweep's updates shared by the `seeds` runs of the mixer (the sweep
        runs once per mixer); 0 for `frame`, which trains nothing."""
        if mixer == "frame":
            return 0
        return budget["steps"] + len(budget.get("lrs", ())) * budget.get("sweep_steps", 0) / max(seeds, 1)

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
            burn_in=self.cfg.burn_in,
            codes=self.cfg.codes,
            ceilings=self.ceilings,
            embedding_probe=self.embedding_probe,
            context_frames=meta.get("context_frames"),
            cycle_frames=meta.get("cycle_frames"),
            encoder=self.cfg.backbone,
            set_up_cpu_seconds={part: round(s, 1) for part, s in self.set_up_cpu_seconds.items()},
            causal=self.causal,
        )

    def build_model(self, mixer: str) -> nn.Module:
        if mixer == "frame":
            cfg = AnomalyConfig(**{**vars(self.cfg), "mixer": "frame"})
            return build_temporal(cfg, self.cache, self.rt, Path(self.cfg.output))[0]
        return TemporalModel(**temporal_args(self.mixer_config(mixer), self.embed_dim))

    def mixer_config(self, mixer: str, **fields: Any) -> AnomalyConfig:
        """The task's configuration for one mixer: causal attention reads the last `seq_len` frames (the window it
        is trained on, with relative positions), so that it is scored in the regime it learnt; unwindowed, it reads
        thousands of frames of a test video after training on windows of 312 and its validation loss doubles."""
        window = self.seq_len if mixer == "attn_causal" and self.cfg.window is None else self.cfg.window
        return AnomalyConfig(**{**vars(self.cfg), "mixer": mixer, "window": window, **fields})

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
        return PredictionObjective(model, self.cfg.burn_in, self.cfg.input_noise)(x, y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device | None = None) -> tuple[float, int]:
        """(frame AUROC over all test frames, number of test frames)."""
        metrics = self.metrics(model)
        return metrics["auroc_micro"], metrics["frames"]

    # -- what the line adds --------------------------------------------------------------------------------------
    @torch.no_grad()
    def metrics(self, model: nn.Module) -> dict[str, Any]:
        """Calibrate on normal validation video (the continuation of each normal video), score every test video from
        its start; the metrics module's dict over the frames the burn-in judges (`metrics.judged`: the anomalous
        frames and the normal ones whose last `burn_in` frames are normal), AUROC per subtype, bootstrap replicates
        per kind and subtype (`bootstrap.py`), and the warm-up's and the recovery's alarm rates apart."""
        from sklearn.metrics import roc_auc_score

        from mambaout.anomaly.bootstrap import auroc_replicates, interval
        from mambaout.anomaly.metrics import frame_metrics, judged

        mixer = "frame" if isinstance(model, FrameKNN) else model.mixer
        detector = Detector(self.encoder, model.cpu().eval(), mixer, self.patch)
        detector.calibrate(self.normal, self.cache["splits"], self.cfg.quantile)
        calibrate_alarm(self.cfg, detector, self.dataset, self.cache, self.patch_validation)
        temporal = [detector.score_embeddings(e, c, m) for (e, c, _, _), m in zip(self.test, self.test_motion)]
        patch = self.test_patch if self.patch is not None else [None] * len(temporal)
        scores = [detector.fuse(t, p) for t, p in zip(temporal, patch)]
        z = [detector.standardised(t, p) for t, p in zip(temporal, patch)]  # each branch on its normal scale
        b, threshold = self.cfg.burn_in, float(detector.alarm_threshold)
        kinds = [k for *_, k in self.test]
        has_kinds = all(k is not None for k in kinds)
        labels = [y for _, _, y, _ in self.test]
        out = frame_metrics(scores, labels, kinds if has_kinds else None, threshold, context=b)
        out["scores"] = scores
        branches = {"temporal": [z_t for z_t, _ in z]}
        if self.patch is not None:
            branches["patch"] = [z_p for _, z_p in z]
        # each branch alone, so the mixers' own difference stays visible
        out["branches"] = {
            name: {
                "auroc_per_kind": frame_metrics(z, labels, kinds if has_kinds else None, context=b).get(
                    "auroc_per_kind", {}
                )
            }
            for name, z in branches.items()
        }
        if not has_kinds:
            return out
        keep = [judged(y, b) for y in labels]
        s = np.concatenate([x[j] for x, j in zip(scores, keep)])
        s_branch = {name: np.concatenate([x[j] for x, j in zip(z, keep)]) for name, z in branches.items()}
        y = np.concatenate([x[j] for x, j in zip(labels, keep)])
        k = np.concatenate([x[j] for x, j in zip(kinds, keep)])
        offsets = np.cumsum([0] + [int(ev.max()) + 1 for ev, _ in self.events[:-1]])
        event_of = np.concatenate(
            [np.where(ev >= 0, ev + o, -1)[j] for (ev, _), o, j in zip(self.events, offsets, keep)]
        )
        subtype = np.concatenate([st[j] for (_, st), j in zip(self.events, keep)])
        groups = {kind: k == kind for kind in sorted(set(k[y == 1].tolist()) - {""})}
        groups.update({name: subtype == name for name in sorted(set(subtype[y == 1].tolist()) - {""})})
        out["auroc_per_subtype"], out["bootstrap"], out["interval"] = {}, {}, {}
        for name, chosen in groups.items():
            keep = (y == 0) | chosen
            if not (chosen & (event_of >= 0)).any():
                continue
            reps = auroc_replicates(s[keep], y[keep], np.where(chosen, event_of, -1)[keep], self.replicates)
            out["bootstrap"][name] = [round(float(r), 4) for r in reps]
            out["interval"][name] = interval(reps)
            if name not in out.get("auroc_per_kind", {}):
                out["auroc_per_subtype"][name] = float(roc_auc_score(y[keep], s[keep]))
                for branch, sb in s_branch.items():
                    per = out["branches"][branch].setdefault("auroc_per_subtype", {})
                    per[name] = float(roc_auc_score(y[keep], sb[keep]))
        return out

    @torch.no_grad()
    def validation_loss(self, model: TemporalModel) -> float:
        """Mean NLL of the normal validation frames' codes, read as the continuation of their videos (what the
        learning-rate sweep compares; no anomaly is ever seen)."""
        from mambaout.anomaly.temporal import surprise

        model = model.cpu().eval()
        nll = [
            surprise(model(e[None])[0], c, model.horizons)[s:]
            for (e, c, _), s in zip(self.normal, self.cache["splits"])
        ]
        return float(torch.cat(nll).nanmean())

    @torch.no_grad()
    def probe(self, model: nn.Module) -> dict[str, float] | None:
        """The memory probe (`probe.py`) on the model's last-block features over the normal videos."""
        from mambaout.anomaly.probe import memory_probe

        if self.positions is None or isinstance(model, FrameKNN):
            return None
        model = model.cpu().eval()
        features = [model.hidden(e[None])[0].numpy() for e in self.cache["embeddings"]]
        return memory_probe(features, self.positions, self.cache["splits"], self.cfg.burn_in)

    def learning_rate(self, mixer: str, budget: dict[str, Any]) -> tuple[float, dict[str, float]]:
        """The learning rate of `budget["lrs"]` with the lowest normal validation loss after `sweep_steps` updates
        (seed 0), chosen once per mixer and kept in the work folder; without `lrs`, budget["lr"]. Part of the set-up
        every run of the mixer shares: its CPU seconds add to `set_up_cpu_seconds["lr_sweep"]`, and the study makes
        it where it sets the task up, before the runs (`runner.set_up_runs`)."""
        import json

        if mixer == "frame" or not budget.get("lrs"):
            return budget["lr"], {}
        path = self.work / f"lr_sweep_{mixer}_{budget['steps']}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            return saved["lr"], saved["losses"]
        clock, losses = time.process_time(), {}
        for lr in budget["lrs"]:
            sweep = dict(budget, steps=budget["sweep_steps"], lr=lr)
            sweep["warmup_steps"] = min(budget.get("warmup_steps", 0), sweep["steps"] // 4)
            model, _ = self._train(mixer, 0, sweep, self.work / f"sweep-{mixer}-{lr:g}")
            losses[f"{lr:g}"] = self.validation_loss(model)
        best = float(min(losses, key=losses.get))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(lr=best, losses=losses)))
        tmp.replace(path)
        cpu = time.process_time() - clock
        self.set_up_cpu_seconds["lr_sweep"] = self.set_up_cpu_seconds.get("lr_sweep", 0.0) + cpu
        return best, losses

    def _train(self, mixer: str, seed: int, budget: dict[str, Any], out: Path) -> tuple[nn.Module, dict]:
        from mambaout.engine.runtime import seed_all

        out.mkdir(parents=True, exist_ok=True)
        cfg = self.mixer_config(
            mixer,
            seed=seed,
            output=str(out),
            steps=budget["steps"],
            batch_size=budget["batch_size"],
            lr=budget["lr"],
            warmup_steps=budget.get("warmup_steps", 0),
            checkpoint_every=0,
        )
        seed_all(seed)
        # quietly: the study prints one line per run, as for its other tasks, not the temporal model's updates
        return build_temporal(cfg, self.cache, dataclasses.replace(self.rt, quiet=True), out)

    def stream_cost(self, model: nn.Module, frames: tuple[int, ...] = (100, 1000, 10000)) -> dict[str, Any]:
        """Temporal step latency (ms, median of the 50 frames stepped before each count) and state bytes after each
        count of frames (`stream_checkpoints`: the frames between go through as one chunk; stepping all 10,000 one
        at a time took 13 s of the 17 s the study's cost measurements took on an Intel Xeon; in chunks, about 2 s)."""
        if isinstance(model, FrameKNN):
            x = torch.randn(1, self.embed_dim)
            t0 = time.perf_counter()
            for _ in range(50):
                model(x)
            ms = (time.perf_counter() - t0) / 50 * 1000
            return {n: dict(step_ms=ms, state_bytes=0) for n in frames}
        model = model.cpu().eval()
        x = torch.randn(max(frames), 1, self.embed_dim)
        return {
            n: dict(step_ms=float(np.median(times)) * 1000, state_bytes=state_bytes(state))
            for n, state, times in stream_checkpoints(model, x, frames)
        }

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
        out = Path(out_dir or self.work / f"{mixer}-seed{seed}")
        lr, sweep = self.learning_rate(mixer, budget)  # set-up the mixer's runs share: not in train_seconds
        start = time.perf_counter()
        model, args = self._train(mixer, seed, dict(budget, lr=lr), out)
        seconds = time.perf_counter() - start
        metrics = self.metrics(model)
        params = sum(p.numel() for p in model.parameters())
        # the run folder holds the whole detector (both branches, the fused alarm): `mambaout watch --run` takes it
        from mambaout.anomaly.train import save_detector

        run = dict(seed=seed, output=str(out), encoder=self.cfg.output, lr=lr, checkpoint_every=0)
        run.update(steps=budget["steps"], batch_size=budget["batch_size"], warmup_steps=budget.get("warmup_steps", 0))
        cfg = self.mixer_config(mixer, **run)
        save_detector(
            cfg,
            self.encoder,
            model,
            args,
            self.dataset,
            self.cache,
            self.patch,
            self.patch_facts,
            start,
            self.patch_validation,
        )
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
            auroc_per_subtype=metrics.get("auroc_per_subtype", {}),
            auroc_interval=metrics.get("interval", {}),
            auroc_bootstrap=metrics.get("bootstrap", {}),
            warmup=metrics["warmup"],
            recovery=metrics["recovery"],
            branches=metrics["branches"],
            lr=lr,
            lr_sweep=sweep,
            validation_loss=None if mixer == "frame" else self.validation_loss(model),
            probe=self.probe(model),
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
