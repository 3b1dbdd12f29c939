"""The paper's long-sequence test: is a task long enough, or causal enough, for an SSM to pay off?

A Transformer block of width D over L tokens (MLP ratio 4) costs 24·D²·L FLOPs in its linear layers and 4·D·L² in
attention (2·D·L² with a causal mask). The quadratic term dominates when r_L = L / (6·D) > 1: Characteristic 1,
"long". Characteristic 2 is causal token mixing (y_t depends only on x_1..x_t). The paper's verdicts:

- neither (ImageNet classification, 196 tokens): an SSM is not needed (Hypothesis 1);
- long, not causal (COCO 4000 tokens, ADE20K 4096): worth exploring (Hypothesis 2);
- causal: an SSM's recurrence matches the task (and when also long, it is what SSMs are for).

`long` follows the paper's definition r_L > 1 in both cases; with a causal mask the printed quadratic share is the
halved term's, so a causal task with 1 < r_L < 2 still spends most FLOPs in the linear layers.

For a hierarchical MambaOut (`model=`), every stage is one row (tokens at its stride, its width); the headline row
is the stage holding the most blocks, stage 3 at stride 16: it sees the same tokens as a ViT/16 and does most of
the work (9 of 18 blocks in Femto, 27 of 37 in Small), so the paper's ViT-based argument applies to it unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mambaout.errors import UserError

# name -> (height, width, patch size): the paper's three tasks.
PRESETS: dict[str, tuple[int, int, int]] = {
    "imagenet": (224, 224, 16),
    "coco": (800, 1280, 16),
    "ade20k": (512, 2048, 16),
}
# The widths the paper's argument uses when no model or width is given.
PAPER_WIDTHS: dict[str, int] = {"ViT-S": 384, "ViT-B": 768}


def image_tokens(height: int, width: int, patch_size: int) -> int:
    """Tokens of an image cut into patches: (H // P) * (W // P); 224x224 /16 -> 196, 800x1280 -> 4000."""
    if min(height, width, patch_size) < 1:
        raise UserError(f"image size and patch size must be positive, got {height}x{width} patch {patch_size}")
    if patch_size > min(height, width):
        raise UserError(f"patch size {patch_size} is larger than the image {height}x{width}; use a smaller patch")
    return (height // patch_size) * (width // patch_size)


@dataclass(frozen=True)
class LongSequenceTest:
    """One (L, D) row of the test with every number the paper's argument uses."""

    name: str
    seq_len: int
    dim: int
    causal: bool

    @property
    def threshold(self) -> int:
        return 6 * self.dim

    @property
    def r_L(self) -> float:  # noqa: N802 (the paper's symbol)
        return self.seq_len / (6 * self.dim)

    @property
    def linear_flops(self) -> int:
        return 24 * self.dim**2 * self.seq_len

    @property
    def attention_flops(self) -> int:
        full = 4 * self.dim * self.seq_len**2
        return full // 2 if self.causal else full

    @property
    def quadratic_share(self) -> float:
        return self.attention_flops / (self.attention_flops + self.linear_flops)

    @property
    def long(self) -> bool:
        return self.r_L > 1

    @property
    def verdict(self) -> str:
        if self.long and self.causal:
            return "long and causal: the case SSMs are for (Characteristics 1 and 2)"
        if self.long:
            return "long, not causal: an SSM is worth exploring (Hypothesis 2)"
        if self.causal:
            return "short but causal: an SSM's recurrence fits, but attention is still cheap at this length"
        return "short, not causal: an SSM is not needed (Hypothesis 1)"

    @property
    def ssm_expected_to_help(self) -> bool:
        return self.long or self.causal

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(
            threshold_6D=self.threshold,
            r_L=self.r_L,
            linear_flops_24D2L=self.linear_flops,
            attention_flops_4DL2=self.attention_flops,
            quadratic_share=self.quadratic_share,
            long=self.long,
            verdict=self.verdict,
            ssm_expected_to_help=self.ssm_expected_to_help,
        )
        return d


def model_stages(model_name: str, height: int, width: int) -> list[tuple[str, int, int, int]]:
    """(name, tokens, width, blocks) for each stage of a MambaOut variant at an image size (strides 4..32)."""
    from mambaout.models.factory import check_model_name
    from mambaout.models.variants import VARIANTS

    arch = VARIANTS[check_model_name(model_name)].arch
    rows = []
    for s, (depth, dim) in enumerate(zip(arch["depths"], arch["dims"])):
        stride = 4 * 2**s
        rows.append((f"{model_name} stage {s + 1} (/{stride})", -(-height // stride) * -(-width // stride), dim, depth))
    return rows


def analyze(
    seq_len: int | None = None,
    preset: str | None = None,
    image_size: tuple[int, int] | None = None,
    patch_size: int = 16,
    dim: int | None = None,
    model: str | None = None,
    causal: bool = False,
) -> dict:
    """Run the long-sequence test. Returns {"task", "seq_len", "causal", "rows": [...], "headline": index}.

    Give the task as `seq_len`, a `preset` ("imagenet", "coco", "ade20k") or an `image_size` (H, W) with
    `patch_size`; the width as `dim`, a MambaOut `model`, or neither (the paper's ViT-S and ViT-B rows).

    Example:
        >>> analyze(preset="coco")["rows"][0]["seq_len"], analyze(preset="coco")["rows"][0]["threshold_6D"]
        (4000, 2304)
    """
    if sum(x is not None for x in (seq_len, preset, image_size)) > 1:
        raise UserError("give the task once: a preset, --image-size H W, or --seq-len L")
    if dim is not None and model is not None:
        raise UserError("give the width once: --dim D or --model NAME")
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        height, width, patch_size = PRESETS[preset]
        image_size = (height, width)
    if seq_len is None and image_size is None:
        height, width, patch_size = PRESETS["imagenet"]
        image_size, preset = (height, width), "imagenet"
    if seq_len is not None and seq_len < 1:
        raise UserError(f"--seq-len must be a positive number of tokens, got {seq_len}")
    if dim is not None and dim < 1:
        raise UserError(f"--dim must be a positive width, got {dim}")
    if seq_len is not None:
        task = f"sequence of {seq_len} tokens"
    else:
        height, width = image_size
        seq_len = image_tokens(height, width, patch_size)
        task = f"{preset + ': ' if preset else ''}{height}x{width} image, {patch_size}x{patch_size} patches"

    headline = 0
    if model is not None:
        if image_size is None:
            raise UserError("--model needs an image task (a preset or --image-size) to know each stage's tokens")
        stages = model_stages(model, *image_size)
        rows = [LongSequenceTest(name, tokens, width, causal) for name, tokens, width, _ in stages]
        headline = max(range(len(stages)), key=lambda i: stages[i][3])
    elif dim is not None:
        rows = [LongSequenceTest(f"D={dim}", seq_len, dim, causal)]
    else:
        rows = [LongSequenceTest(name, seq_len, d, causal) for name, d in PAPER_WIDTHS.items()]
    return dict(
        task=task, seq_len=rows[headline].seq_len, causal=causal, headline=headline, rows=[r.as_dict() for r in rows]
    )


def _flops(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def format_analysis(result: dict) -> str:
    """The terminal report of `analyze`: one row per width, then the verdicts."""
    attn = "2·D·L² (causal)" if result["causal"] else "4·D·L²"
    lines = [
        f"task: {result['task']}; token mixing: {'causal' if result['causal'] else 'fully visible'}",
        f"{'':<34}{'L':>7}{'6D':>7}{'r_L=L/6D':>10}{'24·D²·L':>11}{attn:>17}{'quadratic':>11}  long?",
    ]
    for i, r in enumerate(result["rows"]):
        mark = "*" if i == result["headline"] and len(result["rows"]) > 1 and "stage" in r["name"] else " "
        lines.append(
            f"{mark}{r['name']:<33}{r['seq_len']:>7}{r['threshold_6D']:>7}{r['r_L']:>10.2f}"
            f"{_flops(r['linear_flops_24D2L']):>11}{_flops(r['attention_flops_4DL2']):>17}"
            f"{r['quadratic_share']:>10.0%}  {'yes' if r['long'] else 'no'}"
        )
    lines.append("verdicts (the paper's Characteristic 1 = long, r_L > 1; Characteristic 2 = causal):")
    seen = []
    for r in result["rows"]:
        if r["verdict"] not in seen:
            seen.append(r["verdict"])
    if any("stage" in r["name"] for r in result["rows"]):
        head = result["rows"][result["headline"]]
        lines.append(f"  * headline row (the stage with most blocks): {head['name']}: {head['verdict']}")
    for v in seen:
        names = ", ".join(r["name"] for r in result["rows"] if r["verdict"] == v)
        lines.append(f"  {names}: {v}")
    return "\n".join(lines)
