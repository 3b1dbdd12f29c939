"""Token mixers for the Gated CNN block's slot: the one thing the study changes.

Every mixer maps channels-last tokens to tokens of the same shape: (B, H, W, C) images (layout "2d", the `c`
branch of the block, C = conv_channels) or (B, L, C) sequences (layout "1d").

| name          | what                                                        | causal                    |
|---------------|-------------------------------------------------------------|---------------------------|
| "conv"        | depthwise kxk conv (MambaOut); on sequences causal conv1d    | images: no; sequences: yes |
| "ssm"         | conv -> SiLU -> selective scan (Mamba), `scan=` cross|bidi|causal | when scan="causal"   |
| "attn"        | conv -> SiLU -> multi-head self-attention over all tokens   | no                        |
| "attn_causal" | the same with a causal conv and a causal mask (raster order) | yes                      |

Streaming with carried state, for the causal sequence mixers ("conv", "ssm" with scan="causal", "attn_causal"):
`state = mixer.init_state(batch)`, then `y, state = mixer(chunk, state)` for each chunk (B, L_chunk, C) of a long
sequence, or `y_t, state = mixer.step(x_t, state)` for one token (B, C); one state format for both, and chunks,
steps and one pass over the whole sequence give the same outputs. The state is differentiable: detach it between
chunks for truncated backpropagation through time. "attn_causal" takes `window=W` (attend to the last W tokens) and
`rope=True` (rotary positions counted across chunks); see each mixer's module for its state.

Costs the FLOP counter cannot see are declared by each mixer's `extra_macs` (formulas in `ssm.py`, `attention.py`
and docs/study.md): the scan adds 4.5·B·L·C·N MACs per direction, attention 2·B·C·L² (half that causal).

Example:
    >>> mixer = build_mixer("ssm", 48, kernel_size=7, scan="bidi")
    >>> mixer(torch.randn(2, 14, 14, 48)).shape
    torch.Size([2, 14, 14, 48])
    >>> build_mixer("conv", 64, layout="1d")(torch.randn(2, 100, 64)).shape
    torch.Size([2, 100, 64])
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mambaout.errors import UserError
from mambaout.mixers.attention import AttentionMixer
from mambaout.mixers.local_conv import LAYOUTS, LocalConv

MIXERS = ("conv", "ssm", "attn", "attn_causal")


def check_mixer(name: str) -> str:
    """Return `name` if it is a mixer, else raise a UserError listing them."""
    if name not in MIXERS:
        raise UserError(f"unknown mixer {name!r}; choose one of {', '.join(MIXERS)}")
    return name


def is_causal(name: str, layout: str = "2d", **kwargs: Any) -> bool:
    """Whether `build_mixer(name, ..., layout=layout, **kwargs)` mixes tokens causally."""
    if name == "conv":
        return kwargs.get("causal", layout == "1d")
    if name == "ssm":
        from mambaout.mixers.ssm import DEFAULT_SCAN

        return (kwargs.get("scan") or DEFAULT_SCAN[layout]) == "causal"
    return name == "attn_causal"


def build_mixer(name: str, dim: int, kernel_size: int = 7, layout: str = "2d", **kwargs: Any) -> nn.Module:
    """A token mixer over `dim` channels; see the table above. Extra keywords go to the mixer's class.

    "conv" takes `causal=` (default: False on images, True on sequences); "ssm" takes `scan=`, `d_state=` and the
    SelectiveSSM's keywords; "attn"/"attn_causal" take `head_dim=`, and on sequences `rope=`, `rope_base=`;
    "attn_causal" also `window=`.
    """
    check_mixer(name)
    if layout not in LAYOUTS:
        raise UserError(f"layout must be '2d' (images) or '1d' (sequences), got {layout!r}")
    if name == "conv":
        return LocalConv(dim, kernel_size, layout, causal=kwargs.pop("causal", layout == "1d"), **kwargs)
    if name == "ssm":
        from mambaout.mixers.ssm import SSMMixer  # needs the scan kernels; import only when asked for

        return SSMMixer(dim, kernel_size, layout, **kwargs)
    return AttentionMixer(dim, kernel_size, layout, causal=name == "attn_causal", **kwargs)


__all__ = ["MIXERS", "AttentionMixer", "LocalConv", "build_mixer", "check_mixer", "is_causal"]
