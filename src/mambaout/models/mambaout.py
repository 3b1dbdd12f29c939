"""MambaOut: a 4-stage hierarchy of Gated CNN blocks (Mamba with the SSM taken out).

Paper: "MambaOut: Do We Really Need Mamba for Vision?" (Yu & Wang, CVPR 2025, arXiv 2405.07992).

Layout is channels-last (B, H, W, C) inside the network; permutes wrap only the convolutions. Parameter names follow
timm's `mambaout.py` so `timm/mambaout_*` weights load as they are; the authors' release layout is remapped in
`mambaout.models.checkpoint`, the variant table lives in `mambaout.models.variants`. This file is the reference
arithmetic only: the fused CPU inference kernels are a separate, explicit step (`mambaout.models.fuse`).

The token mixer of every block is a parameter (`mixer=`): "conv" is MambaOut's 7x7 depthwise conv; the study's
other mixers (conv + SSM, attention, causal attention) plug into the same slot, so an ablation changes the mixer and
nothing else (see `mambaout.mixers`).
"""

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm, LayerScale, calculate_drop_path_rates, trunc_normal_
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq
from torch import nn

from mambaout.mixers.local_conv import depthwise_conv2d

torch.fx.wrap("depthwise_conv2d")  # torch.fx patches a wrapped name per module: a leaf in this module too

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU}


def _act(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Stem(nn.Module):
    """Stride-4 stem: conv3x3 s2 (-> D/2) [-> LN] -> act -> conv3x3 s2 (-> D) -> LN. NCHW in, NHWC out."""

    def __init__(self, in_chans: int, out_dim: int, mid_norm: bool = True, act: str = "gelu", device=None, dtype=None):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_dim // 2, kernel_size=3, stride=2, padding=1, **dd)
        self.norm1 = LayerNorm(out_dim // 2, **dd) if mid_norm else None
        self.act = _act(act)
        self.conv2 = nn.Conv2d(out_dim // 2, out_dim, kernel_size=3, stride=2, padding=1, **dd)
        self.norm2 = LayerNorm(out_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.norm1 is not None:
            x = self.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.conv2(self.act(x))
        return self.norm2(x.permute(0, 2, 3, 1))


class Downsample(nn.Module):
    """Conv3x3 s2 then LN (paper), or LN then conv3x3 s2 (`norm_first`, the timm `*_rw` variants). NHWC."""

    def __init__(self, in_dim: int, out_dim: int, norm_first: bool = False, device=None, dtype=None):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        self.norm_first = norm_first
        if norm_first:
            self.norm = LayerNorm(in_dim, **dd)
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1, **dd)
        if not norm_first:
            self.norm = LayerNorm(out_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:  # the permutes are views: the NCHW conv reads the channels-last tensor as it is
            return self.conv(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class GatedCNNBlock(nn.Module):
    """Y = fc2(act(g) * cat(i, mixer(c))) + X, with (g, i, c) = split(fc1(LN(X))). NHWC in and out.

    hidden = int(expansion_ratio * dim); c has int(conv_ratio * dim) channels and is the only part that is mixed
    across tokens; i passes through untouched. mixer="conv" is a depthwise kxk conv with bias and no activation,
    `self.conv`'s weights run through `depthwise_conv2d` (on maps smaller than the kernel's reach, as late stages of
    small images are, it leaves out the taps that only meet padding), so hooks on `conv` itself do not run.
    """

    def __init__(
        self,
        dim: int,
        expansion_ratio: float = 8 / 3,
        kernel_size: int = 7,
        conv_ratio: float = 1.0,
        act: str = "gelu",
        ls_init_value: float | None = None,
        drop_path: float = 0.0,
        mixer: str = "conv",
        mixer_kwargs: dict[str, Any] | None = None,
        device=None,
        dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        hidden = int(expansion_ratio * dim)
        conv_channels = int(conv_ratio * dim)
        if conv_channels > hidden:
            raise ValueError(f"conv_ratio {conv_ratio} gives {conv_channels} mixed channels > hidden width {hidden}")
        self.split_indices = (hidden, hidden - conv_channels, conv_channels)
        self.norm = LayerNorm(dim, **dd)
        self.fc1 = nn.Linear(dim, 2 * hidden, **dd)
        self.act = _act(act)
        layout = (mixer_kwargs or {}).get("layout", "2d")
        if mixer == "conv" and layout == "2d":  # MambaOut's own mixer, under the checkpoints' name `conv`
            self.conv = nn.Conv2d(
                conv_channels, conv_channels, kernel_size, padding=kernel_size // 2, groups=conv_channels, **dd
            )
        else:
            from mambaout.mixers import build_mixer  # the study's mixers; imported only when asked for

            mixer_module = build_mixer(mixer, conv_channels, kernel_size=kernel_size, **(mixer_kwargs or {}))
            self.mixer = mixer_module.to(**dd) if device is not None or dtype is not None else mixer_module
        self.fc2 = nn.Linear(hidden, dim, **dd)
        self.ls = LayerScale(dim, init_values=ls_init_value, **dd) if ls_init_value is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split_indices, dim=-1)
        if hasattr(self, "conv"):
            c = depthwise_conv2d(c.permute(0, 3, 1, 2), self.conv.weight, self.conv.bias).permute(0, 2, 3, 1)
        else:
            c = self.mixer(c)
        x = self._gate(g, i, c)
        return self.drop_path(self.ls(x)) + shortcut

    def _gate(self, g: torch.Tensor, i: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """fc2(act(g) * cat(i, c)). g is a strided view of fc1's output; made contiguous first, the activation and its
        backward run oneDNN's kernels instead of ATen's strided loop, which took 2-5x longer (GELU, one thread, the
        study's widths and femto's first stage): a training step of the line's and selective copying's models took
        0.92-0.99x the time, AVX2 settings and AVX-512 alike (2-core Xeon, `benchmarks/bench_study_steps.py`), for one
        copy of g."""
        return self.fc2(self.act(g.contiguous()) * torch.cat((i, c), dim=-1))

    def forward_last(self, x: torch.Tensor, last: int) -> torch.Tensor:
        """`forward(x)[:, -last:]` for a 1-D block's tokens x (B, L, C), to float32 rounding, with the token-wise
        work (g and i of fc1, the gate, fc2) done for those `last` tokens only: the mixer still reads c at every
        token. For the last block of a model whose loss reads a few positions (selective copying reads 4 of 36).

        Example:
            >>> block = GatedCNNBlock(16, kernel_size=4, mixer="ssm", mixer_kwargs=dict(layout="1d"))
            >>> block.forward_last(torch.randn(2, 10, 16), 3).shape
            torch.Size([2, 3, 16])
        """
        if hasattr(self, "conv"):
            raise ValueError("forward_last takes the tokens (B, L, C) of a block with a 1-D mixer, not an image's")
        if not 1 <= last <= x.shape[1]:
            raise ValueError(f"forward_last: last must be between 1 and the {x.shape[1]} tokens, got {last}")
        h = self.norm(x)
        gated = self.split_indices[0] + self.split_indices[1]  # fc1's rows for g and i; the rest are c's
        weight, bias = self.fc1.weight, self.fc1.bias
        c = self.mixer(F.linear(h, weight[gated:], None if bias is None else bias[gated:]))[:, -last:]
        gi = F.linear(h[:, -last:], weight[:gated], None if bias is None else bias[:gated])
        g, i = torch.split(gi, self.split_indices[:2], dim=-1)
        return self.drop_path(self.ls(self._gate(g, i, c))) + x[:, -last:]

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """`forward` for one token x (B, C) of a causal 1-D block, the mixer stepping with its state.

        `state` starts as `block.mixer.init_state(B)` (the conv's last k - 1 inputs, the SSM's state, attention's
        key/value cache); stepping through a sequence gives `forward`'s output to float32 rounding.

        Example:
            >>> block = GatedCNNBlock(16, kernel_size=4, mixer="conv", mixer_kwargs=dict(layout="1d")).eval()
            >>> y, state = block.step(torch.randn(2, 16), block.mixer.init_state(2))
        """
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split_indices, dim=-1)
        c, state = self.mixer.step(c, state)
        y = self._gate(g, i, c)
        return self.drop_path(self.ls(y)) + x, state

    def stream(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """`forward` for the next chunk x (B, L, C) of a causal 1-D stream, the mixer carrying `state` from the chunk
        before (the same state `step` keeps): chunks in turn give `forward` on the whole sequence to float32 rounding.
        """
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split_indices, dim=-1)
        c, state = self.mixer(c, state)
        y = self._gate(g, i, c)
        return self.drop_path(self.ls(y)) + x, state


class MambaOutStage(nn.Module):
    """[Downsample] -> depth x GatedCNNBlock. NHWC."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        depth: int,
        downsample: str = "",
        drop_path: Sequence[float] = (),
        device=None,
        dtype=None,
        **block_kwargs: Any,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        self.grad_checkpointing = False
        if downsample:
            self.downsample = Downsample(dim, dim_out, norm_first=downsample == "conv_nf", **dd)
        else:
            if dim != dim_out:
                raise ValueError(f"a stage without downsampling keeps its width: {dim} != {dim_out}")
            self.downsample = nn.Identity()
        rates = list(drop_path) or [0.0] * depth
        self.blocks = nn.Sequential(
            *[GatedCNNBlock(dim_out, drop_path=rates[j], **block_kwargs, **dd) for j in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x, use_reentrant=False)
        return self.blocks(x)


def _check_pool(global_pool: str) -> str:
    if global_pool not in ("avg", ""):
        raise ValueError(f"global_pool must be 'avg' or '' (none), got {global_pool!r}")
    return global_pool


class MlpHead(nn.Module):
    """Pool -> LN -> fc(D -> 4D) -> act [-> LN(4D)] -> dropout -> fc(4D -> classes).

    `hidden_norm=True` is the paper's head (timm `MlpHead`), False the `*_rw` head (timm `ClNormMlpClassifierHead`).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        mlp_ratio: float = 4,
        hidden_norm: bool = True,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        device=None,
        dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        self.global_pool = _check_pool(global_pool)
        self.in_features = in_features
        hidden = int(mlp_ratio * in_features)
        self.norm = LayerNorm(in_features, **dd)
        layers: list[tuple[str, nn.Module]] = [("fc", nn.Linear(in_features, hidden, **dd)), ("act", nn.GELU())]
        if hidden_norm:
            layers.append(("norm", LayerNorm(hidden, **dd)))
        self.pre_logits = nn.Sequential(OrderedDict(layers))
        self.num_features = hidden
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def reset(
        self,
        num_classes: int,
        global_pool: str | None = None,
        reset_other: bool = False,
        in_features: int | None = None,
    ) -> None:
        """New classifier for `num_classes`; `reset_other` also drops norm and pre-logits MLP (feature use)."""
        if global_pool is not None:
            self.global_pool = _check_pool(global_pool)
        ref = next(self.parameters(), torch.empty(0))
        if reset_other:
            self.norm, self.pre_logits = nn.Identity(), nn.Identity()
            self.num_features = in_features or self.in_features
        fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)
        self.fc = fc.to(device=ref.device, dtype=ref.dtype).train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((1, 2))
        x = self.drop(self.pre_logits(self.norm(x)))
        return x if pre_logits else self.fc(x)


@torch.fx.wrap  # a leaf for torch.fx: its branch reads the input's shape
def check_images(x: torch.Tensor, in_chans: int) -> None:
    """Raise one clear sentence unless `x` is a (batch, in_chans, height, width) batch of images. Scriptable."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        got = str(x.shape[1]) if x.dim() == 4 else "?"
        raise ValueError(
            f"expected images of shape (batch, {in_chans}, height, width), got {list(x.shape)}; "
            f"create the model with in_chans={got} for this input"
        )


def take_indices(num_stages: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's `feature_take_indices` (None: all, n: last n, sequence: those), a bad index as a ValueError."""
    try:
        return feature_take_indices(num_stages, indices)
    except AssertionError as e:  # timm asserts; a wrong index is the caller's mistake, not a broken invariant
        raise ValueError(f"indices={indices!r}: {e}") from None


class MambaOut(nn.Module):
    """MambaOut image classifier / backbone with the timm model contract.

    Example:
        >>> model = MambaOut(depths=(3, 3, 9, 3), dims=(48, 96, 192, 288), num_classes=10)
        >>> model(torch.randn(2, 3, 224, 224)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 576),
        expansion_ratio: float = 8 / 3,
        kernel_size: int = 7,
        conv_ratio: float = 1.0,
        act: str = "gelu",
        stem_mid_norm: bool = True,
        downsample: str = "conv",
        ls_init_value: float | None = None,
        head_hidden_norm: bool = True,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        mixer: str = "conv",
        mixer_kwargs: dict[str, Any] | None = None,
        device=None,
        dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"depths {tuple(depths)} and dims {tuple(dims)} must have the same length")
        if downsample not in ("conv", "conv_nf"):
            raise ValueError(f"downsample must be 'conv' or 'conv_nf', got {downsample!r}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.mixer = mixer
        self.output_fmt = "NHWC"
        self.stem = Stem(in_chans, dims[0], mid_norm=stem_mid_norm, act=act, **dd)

        rates = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)  # linear over all blocks
        block_kwargs = dict(
            expansion_ratio=expansion_ratio,
            kernel_size=kernel_size,
            conv_ratio=conv_ratio,
            act=act,
            ls_init_value=ls_init_value,
            mixer=mixer,
            mixer_kwargs=mixer_kwargs,
        )
        stages, self.feature_info, prev = [], [], dims[0]
        for s, (depth, dim) in enumerate(zip(depths, dims)):
            down = downsample if s > 0 else ""
            stages.append(MambaOutStage(prev, dim, depth, down, drop_path=rates[s], **block_kwargs, **dd))
            prev = dim
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**s, module=f"stages.{s}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = dims[-1]
        self.head = MlpHead(
            dims[-1], num_classes, hidden_norm=head_hidden_norm, drop_rate=drop_rate, global_pool=global_pool, **dd
        )
        self.head_hidden_size = self.head.num_features
        self.apply(self._init_weights)
        from mambaout.mixers import init_mixer_weights

        init_mixer_weights(self)  # mixers with a design-specific init (the SSM's A_log and Δ bias) apply it last

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.is_meta:  # meta tensors hold no values to set
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # --- the timm model contract -------------------------------------------------------------------------------

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay (timm's `param_groups_layer_decay`)."""
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay beyond timm's default (1-D tensors): the SSM's A_log and D."""
        return {n for n, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None, reset_other: bool = False) -> None:
        """Replace the final fc (pre-logits MLP kept unless `reset_other`) with a fresh one for `num_classes`."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, reset_other=reset_other)
        self.head_hidden_size = self.head.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, H/32, W/32, D) channels-last features of the last stage."""
        check_images(x, self.in_chans)
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (strides 4, 8, 16, 32), NCHW by default.

        `indices`: an int n takes the last n stages, a sequence takes those stage indices (negative allowed),
        None takes all. `norm` is accepted for the timm contract; MambaOut has no norm on its spatial features
        (its final LN acts after pooling), so it changes nothing. Returns (final features, intermediates) or just
        the intermediates.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, max_index = take_indices(len(self.stages), indices)
        check_images(x, self.in_chans)
        x = self.stem(x)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        intermediates = []
        for idx, stage in enumerate(stages):
            x = stage(x)
            if idx in take:
                intermediates.append(x.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last requested one (and the head), for feature-extraction-only use."""
        take, max_index = take_indices(len(self.stages), indices)
        pruned_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if pruned_end:
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or pruned_end:
            self.num_classes = 0
            self.head.reset(0, "", reset_other=True, in_features=self.num_features)
            self.head_hidden_size = self.head.num_features
        return take
