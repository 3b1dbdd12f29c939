"""The fused CPU inference path of MambaOut's Gated CNN block: an explicit step, taken per model.

Profiling timm's block on CPU showed that most of inference time was not the matrix products but the memory traffic
around them: the bias copy of `addmm`, the copy that makes the strided conv input contiguous, `torch.cat`, and the
separate activation, product and residual passes. `FusedGatedCNNBlock` runs the same arithmetic with oneDNN's fused
linear kernels (`torch.ops.mkldnn._linear_pointwise`, the ones inductor uses on CPU):

- fc1 as three row slices of its weight: g with GELU/SiLU fused in, i, and c, so c comes out contiguous for the conv;
- the gate product in place instead of `torch.cat`;
- the residual add fused into fc2, with LayerScale folded into fc2's weight and bias;
- the weights packed once into oneDNN's blocked layout (`torch.ops.mkldnn._reorder_linear_weight`, what inductor's
  freezing does), not on every call; packed again only when a parameter changes. Measured on a 2-core Xeon
  (docs/models.md): femto at 224 x 224, batch 1, went from 1.21x to 1.26x timm's eager speed.

The stem's and the downsampling layers' dense convolutions (`FusedConv2d`) but the first read channels-last input
(the permuted NHWC activations) and oneDNN wants their weight channels-last too; given the parameter's NCHW layout it
copied the weight into that layout on every call (0.66 ms of a 22 ms femto forward at batch 1 for the last one alone, in
PyTorch's profiler). They keep a channels-last copy instead, renewed like the packed linears: femto at 224 x 224,
batch 1, 1.5-3 % faster (three interleaved runs on a 2-core Xeon, docs/models.md); at batch 8 within the noise. The
stem's first conv reads the NCHW image: its channels-last weight makes oneDNN return channels-last output, which the
permute to NHWC after it then takes for free (4-6 % of femto's batch-1 forward against a plain conv there).

It takes that path only where it is exact, applies and pays: a CPU float32 input of at least
`fused_min_elements(channels)` elements (2^15; 3/8 of that from 192 channels), autograd and autocast off, not under
torch.compile (inductor fuses the reference graph itself) or an exporter's trace, and no active drop path. Anywhere else
it runs the reference `GatedCNNBlock.forward`, so a fused model still trains, exports, runs on a GPU or under autocast,
unchanged.

    model = fuse_for_inference(create_model("mambaout_femto").eval())   # the blocks now take the fused path
    unfuse(model)                                                        # back to the plain reference model
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from timm.layers import DropPath, LayerScale
from torch import nn

from mambaout.engine.runtime import exporting
from mambaout.models.mambaout import Downsample, GatedCNNBlock, Stem

_linear = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_reorder = getattr(getattr(torch.ops, "mkldnn", None), "_reorder_linear_weight", None)
_ONEDNN_ACT = {nn.GELU: ("gelu", "none"), nn.SiLU: ("swish", "")}  # activation -> (oneDNN attr, algorithm)
# Below this many input elements (rows x channels) oneDNN's per-call cost outweighs the passes it saves and the block
# runs the reference; `fused_min_elements` scales it with the block's width. Fused over reference speed of one femto
# block (2-core Intel Xeon, then 2-core AMD EPYC, 2 threads): 48 channels 0.74-0.97x at 16-1024 rows, 1.16x at 2048
# (Xeon), 0.68-0.92x at 4-784 rows (EPYC); 96 channels 0.97x at 256 rows, 1.04x at 512 (Xeon), 0.96x at 256, 1.03x
# at 484 (EPYC); 192 channels 1.05x at 128 rows, 1.10x at 256 (Xeon), 0.94x at 49, 1.02-1.06x at 64-196 (EPYC); 288
# channels 1.0x at 128 rows (Xeon), 0.92x at 16, 1.05x at 49, 1.13x at 64 (EPYC).
FUSED_MIN_ELEMENTS = 1 << 15


def fused_min_elements(channels: int) -> int:
    """The input size (elements) from which a block of `channels` takes the fused kernels: FUSED_MIN_ELEMENTS, and
    3/8 of it from 192 channels (64 rows of 192, 43 of 288), where the packed weights pay sooner. In whole models
    (2-core AMD EPYC, interleaved in one process, 30 rounds, six comparisons in three processes) fusing the last
    stage at batch 1, 224², made femto 1.01-1.13x faster and tiny 1.03-1.05x; pico at 64², batch 1, where every block
    stays under it, is unchanged. A floor of 0 made pico 1.15-1.34x slower. Wider blocks are extrapolated from these,
    apart from tiny's 49 rows of 576 channels (inside the 1.03-1.05x above).

    Example:
        >>> fused_min_elements(96), fused_min_elements(288)
        (32768, 12288)
    """
    return FUSED_MIN_ELEMENTS * 3 // 8 if channels >= 192 else FUSED_MIN_ELEMENTS


# module -> (the parameters' identity and versions, its weights in the fused kernels' layout). Outside the module, so
# that copying, pickling or saving a fused model never meets a oneDNN tensor.
_PACKED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Any]] = weakref.WeakKeyDictionary()


def onednn_available() -> bool:
    """Whether this torch build has oneDNN and its fused linear op (x86 and ARM builds do)."""
    return _linear is not None and torch.backends.mkldnn.is_available()


def _inference_applies(x: torch.Tensor) -> bool:
    """A CPU float32 input with autograd and autocast off, not under torch.compile or an exporter's trace."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not exporting()
    )


def _kept(module: nn.Module, params: tuple[torch.Tensor, ...], make: Callable[[bool], Any]) -> Any:
    """`make(versioned)`'s result for `module`, made at the first call and again whenever one of `params` was replaced
    or changed in place through autograd's version counter (load_state_dict, an optimizer step, `with
    torch.no_grad(): p.mul_(2)`). Writes that bypass it (through `p.data`, `p.numpy()`) need `fuse_for_inference(model)`
    again, which drops the kept copies. Parameters made under `torch.inference_mode()` have no version counter: their
    result is made per call (`versioned` False) and never kept."""
    versioned = not any(p.is_inference() for p in params)
    cached = _PACKED.get(module)
    # the entry holds the parameters themselves: a replaced one is another object, and its memory (and address)
    # cannot be reused while the entry lives
    if versioned and cached is not None and len(cached[0]) == len(params):
        if all(q is p and v == p._version for (q, v), p in zip(cached[0], params)):
            return cached[1]
    value = make(versioned)
    if versioned:
        _PACKED[module] = (tuple((p, p._version) for p in params), value)
    return value


class FusedGatedCNNBlock(GatedCNNBlock):
    """A GatedCNNBlock (same parameters and state-dict keys) whose CPU inference runs oneDNN's fused kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused_applies(x):
            return self.forward_fused(x)
        return super().forward(x)

    def _fused_applies(self, x: torch.Tensor) -> bool:
        return (
            _inference_applies(x)
            and not (self.training and isinstance(self.drop_path, DropPath))
            and x.numel() >= fused_min_elements(self.fc1.in_features)  # last: a compiler or exporter never sees it
        )

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """The reference arithmetic with fused kernels; equal to `GatedCNNBlock.forward` to float32 rounding."""
        hidden, n_id, _ = self.split_indices
        (w_g, b_g), (w_i, b_i), (w_c, b_c), (w2, b2) = self.packed_weights(x.numel() // x.shape[-1])
        attr, algorithm = _ONEDNN_ACT[type(self.act)]
        xn = self.norm(x)
        gate = _linear(xn, w_g, b_g, attr, [], algorithm)
        c = _linear(xn, w_c, b_c, "none", [], "")  # contiguous: the conv copies nothing
        c = self.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        if n_id:
            gate[..., :n_id].mul_(_linear(xn, w_i, b_i, "none", [], ""))
        gate[..., n_id:].mul_(c)
        return _linear.binary(gate, x, w2, b2, "add")  # fc2(gate) + x in one kernel

    def packed_weights(self, rows: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """(weight, bias) of fc1's gate, identity and conv slices and of fc2 (LayerScale folded in: (W a + b) * gamma
        = (gamma W) a + gamma b), the weights packed by oneDNN for inputs of about `rows` rows; kept until a
        parameter changes (`_kept`), or sliced per call for parameters made under `torch.inference_mode()`."""
        params = (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        if isinstance(self.ls, LayerScale):
            params += (self.ls.gamma,)

        def make(versioned: bool) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
            hidden, n_id, _ = self.split_indices
            w, b = self.fc1.weight.detach(), self.fc1.bias.detach()
            w2, b2 = self.fc2.weight.detach(), self.fc2.bias.detach()
            if isinstance(self.ls, LayerScale):
                gamma = self.ls.gamma.detach()
                w2, b2 = w2 * gamma[:, None], b2 * gamma

            def pack(m: torch.Tensor) -> torch.Tensor:
                if _reorder is None or not versioned or not m.numel():
                    return m.contiguous()
                return _reorder(m.contiguous(), rows)

            slices = (slice(0, hidden), slice(hidden, hidden + n_id), slice(hidden + n_id, None))
            return (*((pack(w[s]), b[s]) for s in slices), (pack(w2), b2))

        return _kept(self, params, make)


class FusedConv2d(nn.Conv2d):
    """A dense nn.Conv2d (same parameters and state-dict keys) of the stem or a downsampling layer whose CPU inference
    convolves with a kept channels-last copy of its weight: the layout oneDNN picks for the channels-last input these
    layers get (and that it would otherwise copy the NCHW parameter into on every call), and for the stem's first,
    which reads the NCHW image, the layout that makes its output channels-last for the NHWC layers after it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _inference_applies(x):
            return super().forward(x)
        return self._conv_forward(x, _kept(self, (self.weight,), self._channels_last_weight), self.bias)

    def _channels_last_weight(self, _) -> torch.Tensor:
        return self.weight.detach().contiguous(memory_format=torch.channels_last)


def _fusable(m: nn.Module) -> bool:
    # exactly the reference block with MambaOut's own conv mixer and an activation oneDNN can fuse
    return type(m) is GatedCNNBlock and hasattr(m, "conv") and type(m.act) in _ONEDNN_ACT


def _fusable_convs(model: nn.Module) -> list[nn.Conv2d]:
    # the dense convolutions of the stem and the downsampling layers, exactly nn.Conv2d
    layers = (m for m in model.modules() if isinstance(m, (Stem, Downsample)))
    return [c for layer in layers for c in layer.children() if type(c) in (nn.Conv2d, FusedConv2d) and c.groups == 1]


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Give every eligible Gated CNN block of `model` the fused CPU inference path, and its stem's and downsampling
    layers' convolutions a kept channels-last weight; returns `model` itself.

    The modules keep their parameters, state-dict keys and hooks (only their class becomes `FusedGatedCNNBlock` or
    `FusedConv2d`). Idempotent, apart from dropping the kept weights (they are made again at the next call); a no-op
    on torch builds without oneDNN. `unfuse(model)` undoes it.

    Example:
        >>> model = fuse_for_inference(create_model("mambaout_femto").eval())
        >>> with torch.inference_mode():
        ...     logits = model(torch.randn(8, 3, 224, 224))  # doctest: +SKIP
    """
    if onednn_available():
        for m in model.modules():
            if _fusable(m):
                m.__class__ = FusedGatedCNNBlock
            if type(m) is FusedGatedCNNBlock:
                _PACKED.pop(m, None)
        for conv in _fusable_convs(model):
            conv.__class__ = FusedConv2d
            _PACKED.pop(conv, None)
    return model


def unfuse(model: nn.Module) -> nn.Module:
    """Turn every fused block of `model` back into the reference `GatedCNNBlock` and every `FusedConv2d` back into
    `nn.Conv2d`; returns `model` itself."""
    for m in model.modules():
        if type(m) in (FusedGatedCNNBlock, FusedConv2d):
            m.__class__ = GatedCNNBlock if type(m) is FusedGatedCNNBlock else nn.Conv2d
            _PACKED.pop(m, None)
    return model


def is_fused(model: nn.Module) -> bool:
    """Whether any module of `model` takes a fused path (a `FusedGatedCNNBlock` or a `FusedConv2d`)."""
    return any(type(m) in (FusedGatedCNNBlock, FusedConv2d) for m in model.modules())
