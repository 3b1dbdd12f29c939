"""The patch branch: where a frame differs from every normal frame, with no temporal state (PatchCore's recipe).

    frame -> a backbone's early feature maps (local, mid-level)
          -> 3 x 3 average pool of each map (a patch is described with its neighbourhood, as PatchCore aggregates)
          -> bilinear to the finest map's grid -> concatenate channels: one C-dim feature per patch (h x w of them)
          -> Euclidean distance to the nearest feature in the memory bank of normal patches: an (h, w) map
          -> bilinear to the frame (H, W) -> Gaussian blur (sigma 2 px) = the anomaly map;
             the frame's patch score is the map's maximum.

The backbone: with `--pretrained` the first two stages (strides 4 and 8) of that MambaOut backbone, frozen, as
PatchCore uses an ImageNet backbone's middle layers on real video. Without weights a two-layer CNN with a seeded
random init (`RandomFeatures`, strides 2 and 4): random features of a pixel's neighbourhood keep its colour and
brightness, which is what a local defect changes; a MambaOut trained from scratch here does not (its LayerNorm over
the channels of each position divides brightness out: local frame AUROC 0.72-0.82 from the run's own encoder's
early stages against 0.99 for the random CNN, measured on the built-in line). The stride-2 grid puts the map's
maximum on a 4-pixel defect of a 64 x 64 frame; a stride-4 grid misses it about half the time.

The bank is built once from the patches of normal training frames and thinned by greedy k-center selection
(`kcenter_coreset`, PatchCore's coreset): each pick is the patch farthest from those already picked, so every
normal patch lies within the coreset's covering radius of a kept one, and a rare normal patch is kept while the
thousands of belt patches that look alike collapse to a few. Nothing here depends on time: a frame's map is the same
streamed or offline. Per frame the cost is the small backbone, one (h·w x C+1) @ (C+1 x bank) product (the bank's
squared norms folded in) and two small ones that resize and blur the map at once (`upsample_and_blur`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from torch import nn

# Pixels of the model's frame. anomalib blurs with sigma 4 at 256 px; at 64 px a defect is 4 px wide and sigma 4 pulls
# the map's maximum off it (on the built-in line, seeds 0-3: maximum on the defect in 87-92 % of defect frames with
# sigma 4, 94-98 % with sigma 2; pixel AUROC 0.993-0.998 and 0.997-0.998).
BLUR_SIGMA = 2.0
# Patches matched against the bank per matrix product: their distances (1024 x 512 floats, 2 MiB, for the default
# bank) are reduced to the nearest right after the product. Measured on 2 AVX2 cores (AMD EPYC, Zen 3; medians of 25,
# 2 threads), one 224 x 224 frame's 12,544 patches: 3.8 ms in chunks of 1024 against 4.8 in chunks of 256 and 6.4 in
# one product; a batch of 64 frames at 64 x 64: 14 against 18 ms. Inside `watch` at 224 x 224 the two streamed alike
# (27.6 and 27.9 frames/s).
_CHUNK = 1024
# Frames up to this side resize and blur their distance maps as two matrix products (`upsample_and_blur`); larger
# ones take F.interpolate and `blur`, since the dense matrices' work grows as the side cubed. One map resized 2x and
# blurred, products over interpolate-and-blur time (2-core Intel Xeon, capped at AVX2, medians of 11): 0.21x at 224,
# 0.53x at 512, 0.82x at 768 px on one thread; 0.17x, 0.26x and 0.71x on two.
OPERATOR_MAX_SIDE = 768


def aggregate(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stage maps [(B, C_i, h_i, w_i)] -> patch features (B, sum C_i, h_0, w_0): 3 x 3 neighbourhood mean of each,
    the coarser ones upsampled bilinearly to the finest grid (PatchCore's local aggregation)."""
    size = maps[0].shape[-2:]
    pooled = [F.avg_pool2d(m.float(), 3, stride=1, padding=1, count_include_pad=False) for m in maps]
    pooled = [
        p if p.shape[-2:] == size else F.interpolate(p, size, mode="bilinear", align_corners=False) for p in pooled
    ]
    return torch.cat(pooled, 1)


def flatten_patches(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B·h·w, C), patches of one frame in row-major order."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def kcenter_coreset(points: torch.Tensor, k: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """Greedy k-center selection (PatchCore's coreset): indices of `k` of `points` (N, C) and the covering radius.

    Start from a point drawn with `seed`, then repeatedly take the point farthest from every point taken so far.
    Every point lies within the returned radius of a chosen one, and the chosen ones are pairwise at least that far
    apart, so the radius is within a factor 2 of the best any k points can achieve. O(N·k·C) time, O(N) memory.

    Example:
        >>> idx, radius = kcenter_coreset(torch.randn(1000, 8), 50)
        >>> idx.shape
        torch.Size([50])
    """
    n = len(points)
    if k >= n:
        return torch.arange(n), 0.0
    points = points.float()
    squares = points.pow(2).sum(1)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = int(torch.randint(n, (1,), generator=generator))
    nearest = torch.full((n,), float("inf"))  # squared distance of each point to its nearest chosen one
    for i in range(1, k + 1):
        c = chosen[i - 1]
        d = (squares - 2 * (points @ points[c]) + squares[c]).clamp_min(0)
        torch.minimum(nearest, d, out=nearest)
        nearest[c] = 0.0  # exactly, not a rounding error of (x - x)²
        if i < k:
            chosen[i] = int(nearest.argmax())
    return chosen, float(nearest.max().sqrt())


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D Gaussian of `sigma` pixels, truncated at 4 sigma (anomalib's and scipy's kernel width), summing to 1."""
    radius = int(4 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def blur(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps, edges reflected."""
    return _blur_rows(_blur_rows(maps, kernel).transpose(1, 2), kernel).transpose(1, 2).contiguous()


def _blur_rows(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The blur along the last axis of (B, H, W) maps: reflect needs the pad below the side; replicate the rest of
    the way on tiny maps."""
    r = len(kernel) // 2
    x = F.pad(maps[:, None], (r, r, 0, 0), mode="reflect" if r < maps.shape[-1] else "replicate")
    return F.conv2d(x, kernel.to(maps.dtype).view(1, 1, 1, -1))[:, 0]


def resample_operator(size_in: int, size_out: int, kernel: torch.Tensor | None) -> torch.Tensor:
    """(size_out, size_in) float32 matrix of one axis of `upsample_and_blur`: PyTorch's bilinear resize (align_corners
    False), then the blur along that axis (none if `kernel` is None), composed in float64 from their own kernels
    applied to the identity, so the weights are theirs to float32 rounding.

    Example:
        >>> resample_operator(32, 64, gaussian_kernel(2.0)).shape
        torch.Size([64, 32])
    """
    eye = torch.eye(size_in, dtype=torch.float64)[None, None]
    up = F.interpolate(eye, (size_out, size_in), mode="bilinear", align_corners=False)[0]  # (1, size_out, size_in)
    if kernel is not None:
        up = _blur_rows(up.transpose(1, 2), kernel).transpose(1, 2)  # the blur along the resized axis
    return up[0].float()


def upsample_and_blur(maps: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(B, h, w) maps -> (B, H, W) = rows · map · colsᵀ with rows = `resample_operator(h, H, kernel)` and cols =
    `resample_operator(w, W, kernel)`: the bilinear resize and the blur of `maps` in two matrix products. Both steps
    are linear and act on each axis alone, so this equals `F.interpolate` then `blur` to float32 rounding (tested)."""
    return torch.matmul(rows, torch.matmul(maps, cols.T))


class RandomFeatures(nn.Module):
    """Two 3 x 3 convolutions of stride 2 with ReLU, randomly initialised from `seed` and never trained:
    (B, 3, H, W) -> maps at strides 2 and 4 with `widths` channels."""

    def __init__(self, widths: Sequence[int] = (8, 16), seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            chans = (3, *widths)
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans, chans[1:]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for conv in self.convs:
            x = torch.relu(conv(x))
            maps.append(x)
        return maps


class BackboneStages(nn.Module):
    """The first stages of a MambaOut backbone (pretrained weights for a user's video): maps at strides 4, 8."""

    def __init__(self, backbone: str, pretrained: str | None = None, stages: Sequence[int] = (0, 1)):
        super().__init__()
        from mambaout.models.factory import create_model

        self.stages = list(stages)
        self.backbone = create_model(backbone, pretrained=pretrained or None, num_classes=0)
        self.backbone.prune_intermediate_layers(self.stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone.forward_intermediates(x, indices=self.stages, intermediates_only=True)


def feature_extractor(backbone: str = "random", widths: Sequence[int] = (8, 16), seed: int = 0, pretrained=None):
    """`RandomFeatures` for backbone "random", else `BackboneStages` of that MambaOut variant."""
    if backbone == "random":
        return RandomFeatures(widths, seed)
    return BackboneStages(backbone, pretrained)


class PatchBranch(nn.Module):
    """uint8 frames (B, H, W, 3) -> anomaly maps (B, H, W): the feature extractor, the bank, the blur.

    Example:
        >>> branch = PatchBranch(dict(backbone="random"), bank_size=64)
        >>> branch.maps(torch.zeros(2, 64, 64, 3, dtype=torch.uint8)).shape
        torch.Size([2, 64, 64])
    """

    def __init__(self, extractor: dict, bank_size: int, dim: int | None = None, sigma: float = BLUR_SIGMA):
        super().__init__()
        self.extractor = feature_extractor(**extractor)
        self.extractor.eval().requires_grad_(False)
        if dim is None:
            dim = sum(m.shape[1] for m in self.extractor(torch.zeros(1, 3, 32, 32)))
        # what rebuilds the module around saved weights (pretrained weights are in the state dict, not re-read)
        self.args = dict(extractor={k: v for k, v in extractor.items() if k != "pretrained"}, bank_size=bank_size)
        self.args.update(dim=dim, sigma=sigma)
        self.sigma = float(sigma)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.register_buffer("bank", torch.zeros(bank_size, dim))
        self.register_buffer("bank_squares", torch.zeros(bank_size))
        self.register_buffer("kernel", gaussian_kernel(sigma) if sigma > 0 else torch.ones(1))
        self._operators: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # `operators`: not state

    def train(self, mode: bool = True) -> PatchBranch:
        return super().train(False)  # never trained: a random extractor stays random, a pretrained one as it came

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> patch features (B, C, h, w)."""
        x = (frames.to(self.pixel_mean.device).permute(0, 3, 1, 2).float() - self.pixel_mean) / self.pixel_std
        return aggregate(self.extractor(x))

    @torch.no_grad()
    def set_bank(self, features: torch.Tensor) -> None:
        self.bank = features.float().contiguous().to(self.bank.device)
        self.bank_squares = self.bank.pow(2).sum(1)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """Patch features (B, C, h, w) -> (B, h, w) Euclidean distance of each to its nearest bank feature."""
        b, dim, h, w = features.shape
        # |q - m|² = |q|² + (|m|² - 2 q·m), the bracket as one matrix product against the bank with its squares folded
        # in, [q, 1] · [-2 m; |m|²], _CHUNK patches at a time: no bias copied into every product's output
        q = features.new_empty(b, h, w, dim + 1)
        q[..., :dim] = features.permute(0, 2, 3, 1)
        q[..., dim] = 1.0
        q = q.view(-1, dim + 1)
        bank = torch.cat((self.bank * -2.0, self.bank_squares[:, None]), 1).T.contiguous()
        nearest = torch.cat([torch.mm(part, bank).amin(1) for part in q.split(_CHUNK)])
        d = nearest + q[:, :dim].pow(2).sum(1)
        return d.clamp_min(0).sqrt().view(b, h, w)

    @torch.no_grad()
    def maps(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) -> float32 anomaly maps (B, H, W), at the frames' size."""
        d = self.distances(self.features(frames))
        size = tuple(frames.shape[1:3])
        if max(size) > OPERATOR_MAX_SIDE:
            up = F.interpolate(d[:, None], size, mode="bilinear", align_corners=False)[:, 0]
            return blur(up, self.kernel) if self.sigma > 0 else up
        return upsample_and_blur(d, *self.operators(tuple(d.shape[-2:]), size))

    def operators(self, grid: tuple[int, int], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """`upsample_and_blur`'s two matrices from the patch grid (h, w) to the frame (H, W), made once per size (and
        again after `load_state_dict`, which may bring another kernel)."""
        key = (*grid, *size, self.kernel.device)
        ops = self._operators.get(key)
        if ops is None:
            kernel = self.kernel.cpu() if self.sigma > 0 else None
            ops = tuple(resample_operator(n, out, kernel).to(self.kernel.device) for n, out in zip(grid, size))
            self._operators = {key: ops}  # one frame size at a time: a stream's, or a study's
        return ops

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._operators = {}
        super()._load_from_state_dict(*args, **kwargs)


def frame_scores(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) maps -> (B,) patch scores: each map's maximum."""
    return maps.flatten(1).amax(1)


@torch.no_grad()
def build_patch_branch(
    batches: Iterable[torch.Tensor], extractor: dict, bank_size: int, seed: int = 0, sigma: float = BLUR_SIGMA
) -> tuple[PatchBranch, dict]:
    """A `PatchBranch` whose bank is the k-center coreset of `bank_size` patches of normal uint8 frame batches.

    Example:
        >>> branch, facts = build_patch_branch(batched(frames, 64), dict(backbone="random"), 512)  # doctest: +SKIP
    """
    branch = PatchBranch(extractor, bank_size, sigma=sigma)
    features = torch.cat([flatten_patches(branch.features(b)) for b in batches])
    chosen, radius = kcenter_coreset(features, bank_size, seed)
    branch.set_bank(features[chosen])
    branch.args["bank_size"] = len(chosen)
    return branch, dict(patches=len(features), bank=len(chosen), dim=features.shape[1], covering_radius=radius)
