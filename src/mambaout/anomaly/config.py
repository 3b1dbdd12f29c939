"""The settings of a detector run, stated once: `mambaout anomaly train` is generated from `AnomalyConfig` (every
field a flag, `--config x.yaml`, `--print-config`) and every run writes the resolved one to config.yaml and into
detector.pt. Importing this file does not import torch (the CLI's help stays fast).
"""

from __future__ import annotations

from dataclasses import dataclass

from mambaout.engine.config import AMP_CHOICES, option
from mambaout.errors import UserError

TEMPORAL_MIXERS = ("conv", "ssm", "attn_causal")
DETECTOR_MIXERS = (*TEMPORAL_MIXERS, "frame")  # frame: no temporal model, k-NN distance to normal embeddings


@dataclass
class AnomalyConfig:
    """Everything a detector run depends on; written to <output>/config.yaml and into detector.pt."""

    data: str = option("", "dataset root: train/ test/ test_labels/, or UCSD Ped2 / Avenue / ShanghaiTech", "data")
    output: str = option("runs/anomaly", "run folder", "run")
    mixer: str = option("ssm", "temporal mixer, or frame (k-NN, no temporal model)", "model", DETECTOR_MIXERS)
    encoder: str = option("", "reuse the encoder and cached embeddings of this run folder", "encoder")
    backbone: str = option("mambaout_pico", "MambaOut variant of the per-frame encoder", "encoder")
    pretrained: str = option("", "backbone weights (.pth/.safetensors, URL, hf-hub:id); empty: from scratch", "encoder")
    image_size: int = option(64, "frames are resized to this square size", "encoder")
    embed_dim: int = option(32, "embedding size D per frame", "encoder")
    recon_size: int = option(16, "side of the low-resolution frame the embedding must reconstruct", "encoder")
    codes: int = option(64, "K: frame codes the temporal model predicts (k-means of frame thumbnails)", "encoder")
    code_size: int = option(8, "side of the thumbnail the codes cluster", "encoder")
    motion: bool = option(
        True, "score each frame's global motion against normal motion (stalls, reversals, jerks)", "encoder"
    )
    encoder_steps: int = option(300, "encoder updates", "encoder")
    encoder_batch_size: int = option(32, "frames per encoder update", "encoder")
    encoder_lr: float = option(2e-3, "encoder AdamW learning rate", "encoder")
    encoder_frames: int = option(4096, "at most this many training frames (evenly spaced) train the encoder", "encoder")
    width: int = option(64, "width of the conv model; the others are narrowed to its parameter count", "model")
    depth: int = option(2, "Gated CNN blocks", "model")
    kernel_size: int = option(4, "causal conv kernel in every block (frames)", "model")
    horizons: tuple[int, ...] = option((1, 8), "predict each frame's code from this many frames before", "model")
    window: int | None = option(None, "attn_causal: attend to the last W frames only (bounds its cache)", "model")
    knn: int = option(5, "frame: neighbours averaged", "model")
    knn_bank: int = option(4096, "frame: at most this many normal training embeddings kept", "model")
    patch_bank: int = option(512, "normal patch features the k-center coreset keeps (0: no patch branch)", "patch")
    patch_frames: int = option(600, "normal training frames, drawn at random, whose patches feed the coreset", "patch")
    steps: int = option(400, "temporal model updates", "optimisation")
    batch_size: int = option(16, "windows per update", "optimisation")
    seq_len: int = option(256, "frames per training window that carry a loss", "optimisation")
    burn_in: int = option(56, "frames read before any loss or metric (the context filling)", "optimisation")
    input_noise: float = option(
        1.0, "std of Gaussian noise on the standardised embeddings while training (0: none)", "optimisation"
    )
    lr: float = option(
        1e-2, "AdamW learning rate (the study's sweep chose 1e-2 for every mixer on the line)", "optimisation"
    )
    weight_decay: float = option(0.05, "AdamW weight decay (not on norms, biases, SSM A_log, D)", "optimisation")
    warmup_steps: int = option(20, "linear warm-up updates", "optimisation")
    val_fraction: float = option(0.2, "held-out tail of every normal video for calibration", "data")
    quantile: float = option(0.99, "alarm threshold: this quantile of normal validation scores", "data")
    checkpoint_every: int = option(100, "updates between writes of last.pt", "run")
    seed: int = option(0, "seed of initialisation and data order", "run")
    resume: bool = option(False, "continue a run whose folder holds last.pt", "run")
    device: str | None = option("cpu", "cpu, cuda or cuda:N", "hardware")
    amp: str = option("none", "mixed precision", "hardware", AMP_CHOICES)
    threads: int = option(0, "torch CPU threads (0: torch's choice)", "hardware")

    def check(self) -> None:
        if not self.data:
            raise UserError("--data is required: the dataset root (e.g. the folder `mambaout anomaly generate` wrote)")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"--val-fraction {self.val_fraction} must be between 0 and 1; use e.g. 0.2")
        if any(h < 1 for h in self.horizons):
            raise UserError(f"--horizons {self.horizons} must be whole frames >= 1; use e.g. 1 8")
        if self.burn_in < max(self.horizons):
            raise UserError(f"--burn-in {self.burn_in} must be at least the longest horizon {max(self.horizons)}")
        if self.patch_bank < 0 or (self.patch_bank and self.patch_frames < 1):
            raise UserError("--patch-bank must be >= 0 (0: no patch branch) and --patch-frames >= 1; use e.g. 512 600")
        if self.input_noise < 0:
            raise UserError(f"--input-noise {self.input_noise} must be >= 0 (0: none); use e.g. 1.0")
        if not 0.5 <= self.quantile < 1:
            raise UserError(f"--quantile {self.quantile} must be in [0.5, 1); use e.g. 0.99")
