"""Training and evaluation transforms, and batch Mixup/CutMix, all built by timm's factories.

Train: random resized crop, flip, RandAugment (`rand-m9-mstd0.5-inc1` in the paper), colour jitter (ignored by timm
when RandAugment is on, as in the paper's timm recipe), random erasing. Eval: resize to `input_size / crop_pct`,
centre crop, normalise: the model's `pretrained_cfg` (crop 1.0, bicubic, ImageNet mean/std) unless overridden.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image, ImageOps
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from timm.data import Mixup, auto_augment, create_transform


def _posterize_keeping_zero_bits(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    if bits_to_keep <= 0:  # what Pillow < 12 returned for 0 bits: every pixel 0
        return img.point([0] * 256 * len(img.getbands()))
    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def allow_zero_bit_posterize(transform: Callable) -> Callable:
    """`transform` with its auto-augment ops answering a 0-bit posterize as Pillow once did (a black image).

    timm's RandAugment 'inc1' asks for 0-bit posterize at magnitude 10 (reached by m9 with mstd 0.5), which recent
    Pillow rejects with a ValueError. Only the ops of this transform change, not timm's global op table."""
    try:
        ImageOps.posterize(Image.new("L", (1, 1)), 0)
        return transform  # this Pillow still answers 0 bits itself
    except ValueError:
        pass
    stack = list(getattr(transform, "transforms", [transform]))
    while stack:
        t = stack.pop()
        if isinstance(t, auto_augment.AugmentOp):
            if t.aug_fn is auto_augment.posterize:
                t.aug_fn = _posterize_keeping_zero_bits
        elif isinstance(t, (list, tuple)):
            stack.extend(t)
        else:  # RandAugment and AugMix keep `ops`, AutoAugment a `policy` of op lists
            stack.extend(getattr(t, "ops", ()))
            stack.extend(getattr(t, "policy", ()))
    return transform


def train_transform(
    input_size: int,
    scale: Sequence[float] = (0.08, 1.0),
    hflip: float = 0.5,
    auto_augment: str | None = "rand-m9-mstd0.5-inc1",
    color_jitter: float = 0.4,
    reprob: float = 0.25,
    interpolation: str = "bicubic",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable:
    """PIL image -> augmented, normalised (3, input_size, input_size) tensor.

    Example:
        >>> t = train_transform(224)  # the paper's augmentation
    """
    transform = create_transform(
        input_size,
        is_training=True,
        scale=tuple(scale),
        hflip=hflip,
        auto_augment=auto_augment or None,
        color_jitter=color_jitter or None,  # 0 means none (timm would add a no-op ColorJitter)
        re_prob=reprob,
        re_mode="pixel",
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
    )
    return allow_zero_bit_posterize(transform)


def eval_transform(
    input_size: int,
    crop_pct: float = 1.0,
    interpolation: str = "bicubic",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable:
    """PIL image -> resized, centre-cropped, normalised tensor (timm's evaluation pipeline)."""
    return create_transform(
        input_size, is_training=False, crop_pct=crop_pct, interpolation=interpolation, mean=tuple(mean), std=tuple(std)
    )


def batch_mixup(
    num_classes: int, mixup: float = 0.8, cutmix: float = 1.0, switch_prob: float = 0.5, smoothing: float = 0.1
) -> Mixup | None:
    """timm's Mixup/CutMix on whole batches (soft targets with label smoothing), or None when both are off.

    Example:
        >>> mix = batch_mixup(1000)  # the paper's Mixup 0.8, CutMix 1.0, switch 0.5, smoothing 0.1
        >>> images, soft_targets = mix(images, targets)  # doctest: +SKIP
    """
    if mixup <= 0 and cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=mixup,
        cutmix_alpha=cutmix,
        switch_prob=switch_prob,
        label_smoothing=smoothing,
        num_classes=num_classes,
    )
