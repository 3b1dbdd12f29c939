"""The per-frame encoder: a MambaOut backbone giving a D-dim embedding per frame, trained so it cannot collapse.

    frame uint8 (H, W, 3) -> /255, ImageNet mean/std -> MambaOut stages -> (h, w, C) -> average pool to a g x g grid
                          -> flatten -> LayerNorm -> Linear(g·g·C, D) -> standardise (normal training statistics)

The grid (2 x 2 by default) keeps where things are in the frame, which a global average would blur (an item's
position on the belt is what says how far through its crossing it is). On a user's video the backbone can start
from weights (`--backbone mambaout_femto --pretrained FILE`); on the built-in line a `mambaout_pico` learns here.
The self-supervised objective is to reconstruct a low-resolution copy of the frame (r x r, 16 by default) from the
embedding through a small MLP decoder: every frame must stay tellable from every other by its embedding, so the
embedding cannot collapse to a constant (the decoder is used only in training). Embeddings are then standardised
per dimension with the mean and standard deviation over the normal training frames (buffers of the module).

What the temporal model predicts is not the embedding but each frame's code: the nearest of K centroids
(`--codes`, 64) of the frame averaged down to c x c pixels (`--code-size`, 8), k-means over the normal training
frames (`fit_codes`; the centroids are a buffer). A thumbnail that coarse keeps what is where and of which colour (on
the built-in line, the codes of the four item kinds never mix: purity 1.0 at K = 64) and averages away the belt's
texture, where k-means on the learned embedding mostly clusters texture and position (item-kind purity 0.79, a
triangle and a diamond in one code for 108 of 450 frames): see docs/anomaly.md. With `motion_size` the encoder also
holds the motion model (`motion.py`) that scores each frame's global shift from the frame before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from torch import nn

from mambaout.anomaly.motion import MotionModel
from mambaout.models.factory import create_model
from mambaout.models.fuse import fuse_for_inference


class FrameEncoder(nn.Module):
    """uint8 frames (B, H, W, 3) -> standardised embeddings (B, D).

    Example:
        >>> encoder = FrameEncoder("mambaout_pico", embed_dim=32)
        >>> encoder(torch.zeros(2, 64, 64, 3, dtype=torch.uint8)).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        backbone: str = "mambaout_pico",
        embed_dim: int = 32,
        recon_size: int = 16,
        grid: int = 2,
        pretrained: str | None = None,
        decoder_hidden: int = 256,
        codes: int = 64,
        code_size: int = 8,
        motion_size: int = 0,
    ):
        super().__init__()
        # what rebuilds the module around saved weights (the backbone's own weights are in the state dict)
        self.args = dict(
            backbone=backbone,
            embed_dim=embed_dim,
            recon_size=recon_size,
            grid=grid,
            decoder_hidden=decoder_hidden,
            codes=codes,
            code_size=code_size,
        )
        if motion_size:
            self.args["motion_size"] = motion_size
        self.embed_dim, self.recon_size, self.grid = embed_dim, recon_size, grid
        self.num_codes, self.code_size = codes, code_size
        # fused blocks: oneDNN's kernels where inference without autograd pays (batches of frames), the reference
        # arithmetic everywhere else (training, one small frame, export)
        self.backbone = fuse_for_inference(create_model(backbone, pretrained=pretrained or None, num_classes=0))
        features = grid * grid * self.backbone.num_features
        self.norm = nn.LayerNorm(features, eps=1e-6)
        self.proj = nn.Linear(features, embed_dim)
        self.decoder = nn.Sequential(
            nn.Linear(embed_dim, decoder_hidden), nn.GELU(), nn.Linear(decoder_hidden, 3 * recon_size * recon_size)
        )
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.register_buffer("embed_mean", torch.zeros(embed_dim))
        self.register_buffer("embed_std", torch.ones(embed_dim))
        self.register_buffer("centroids", torch.zeros(codes, 3 * code_size * code_size))  # set by `fit_codes`
        # the global motion from each frame to the next (`motion.py`; None for an encoder saved before it)
        self.motion = MotionModel(motion_size) if motion_size else None

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W)."""
        x = frames.to(self.pixel_mean.device).permute(0, 3, 1, 2).float()
        return (x - self.pixel_mean) / self.pixel_std

    def raw_embedding(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> (B, D) before standardisation (what the decoder reads)."""
        features = self.backbone.forward_features(self.preprocess(frames)).permute(0, 3, 1, 2)  # (B, C, h, w)
        pooled = F.adaptive_avg_pool2d(features, self.grid).flatten(1)
        return self.proj(self.norm(pooled))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return (self.raw_embedding(frames) - self.embed_mean) / self.embed_std

    def thumbnail(self, frames: torch.Tensor, size: int) -> torch.Tensor:
        """The frame averaged down to (B, 3·size·size) in [0, 1]."""
        x = frames.to(self.pixel_mean.device).permute(0, 3, 1, 2).float() / 255
        return F.adaptive_avg_pool2d(x, size).flatten(1)

    def reconstruction_target(self, frames: torch.Tensor) -> torch.Tensor:
        return self.thumbnail(frames, self.recon_size)

    def codes(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> (B,) int64: the nearest centroid to each frame's c x c thumbnail."""
        return nearest(self.thumbnail(frames, self.code_size), self.centroids)

    @torch.no_grad()
    def fit_codes(self, frames: torch.Tensor, seed: int = 0) -> None:
        """k-means (scikit-learn, k-means++, 4 restarts) of the thumbnails of normal training frames (N, H, W, 3)."""
        from sklearn.cluster import KMeans

        x = self.thumbnail(frames, self.code_size).double().cpu().numpy()
        k = min(self.num_codes, len(np.unique(x, axis=0)))
        centres = KMeans(k, n_init=4, random_state=seed).fit(x).cluster_centers_
        self.centroids.fill_(1e3)  # unused codes (fewer distinct frames than K) are never nearest
        self.centroids[:k] = torch.from_numpy(centres).float()

    @torch.no_grad()
    def set_statistics(self, raw: torch.Tensor) -> None:
        """Standardise with the mean and std of raw embeddings (N, D) of normal training frames."""
        self.embed_mean.copy_(raw.mean(0))
        self.embed_std.copy_(raw.std(0).clamp_min(1e-6))


class ReconstructionObjective(nn.Module):
    """What the engine trains: the encoder and its decoder; forward(frames) = MSE of the low-res reconstruction."""

    def __init__(self, encoder: FrameEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        return F.mse_loss(e.decoder(e.raw_embedding(frames)), e.reconstruction_target(frames))


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(B, F), (K, F) -> (B,) index of the nearest centroid (the direct distance: any batch gives the same codes)."""
    return (x[:, None, :] - centroids[None]).pow(2).sum(-1).argmin(-1)


def batched(frames: Iterable[np.ndarray], batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 (H, W, 3) arrays -> uint8 tensors (b, H, W, 3) of up to `batch_size` frames."""
    chunk: list[np.ndarray] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == batch_size:
            yield torch.from_numpy(np.stack(chunk))
            chunk = []
    if chunk:
        yield torch.from_numpy(np.stack(chunk))


@torch.no_grad()
def embed_frames(encoder: nn.Module, frames: Iterable[np.ndarray], batch_size: int = 64, raw: bool = False):
    """Embeddings (T, D) float32 of frames read lazily in batches (never the whole video in memory at once)."""
    return encode_frames(encoder, frames, batch_size, raw)[0]


@torch.no_grad()
def encode_frames(
    encoder: nn.Module, frames: Iterable[np.ndarray], batch_size: int = 64, raw: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(embeddings (T, D) float32, codes (T,) int64, motion scores (T,) float32 or None without a motion model) of
    one video's frames, in order from its start, read lazily in batches (the first frame's motion score is NaN)."""
    encoder.eval()
    fn = encoder.raw_embedding if raw else encoder
    motion = getattr(encoder, "motion", None)
    embeddings, codes, moves, previous = [], [], [], None
    for batch in batched(frames, batch_size):
        embeddings.append(fn(batch).float().cpu())
        codes.append(encoder.codes(batch).cpu())
        if motion is not None:
            scores, previous = motion.step(batch, previous)
            moves.append(scores)
    if not embeddings:
        empty = torch.zeros(0) if motion is not None else None
        return torch.zeros(0, encoder.embed_dim), torch.zeros(0, dtype=torch.long), empty
    return torch.cat(embeddings), torch.cat(codes), torch.cat(moves) if motion is not None else None
