"""Pictures of what a dense model sees: boxes and masks over the image, or the colour-coded segmentation over it.

Colours come from a deterministic palette (the PASCAL VOC bit-spreading colour map), so a class keeps its colour from
picture to picture and run to run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, write_png
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from mambaout.errors import UserError
from mambaout.models.fuse import fuse_for_inference


def palette(n: int) -> torch.Tensor:
    """(n, 3) uint8 colours, distinct and deterministic: the bits of the class index spread over R, G and B."""
    colours = torch.zeros(n, 3, dtype=torch.uint8)
    for i in range(n):
        c, r, g, b = i + 1, 0, 0, 0  # +1: no class gets black
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours[i] = torch.tensor([r, g, b], dtype=torch.uint8)
    return colours


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """uint8 (3, H, W) RGB, or a UserError naming the file."""
    if not Path(path).is_file():
        raise UserError(f"image {path} does not exist")
    try:
        return decode_image(str(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except (RuntimeError, OSError) as e:
        raise UserError(f"could not read image {path} ({e}); is it a JPEG/PNG file?") from e


def draw_detections(
    image: torch.Tensor,
    output: dict[str, torch.Tensor],
    names: Sequence[str],
    score_threshold: float = 0.5,
) -> torch.Tensor:
    """The image with the detections scoring at least `score_threshold`: masks (50 % opacity), boxes, 'name score'."""
    keep = output["scores"] >= score_threshold
    labels = output["labels"][keep].cpu()
    colours = [tuple(int(v) for v in c) for c in palette(len(names) + 1)[labels]]
    if "masks" in output and keep.any():
        masks = output["masks"][keep][:, 0].cpu() > 0.5
        image = draw_segmentation_masks(image, masks, alpha=0.5, colors=colours)
    text = [f"{names[int(lbl) - 1]} {float(s):.2f}" for lbl, s in zip(labels, output["scores"][keep].cpu())]
    return draw_bounding_boxes(image, output["boxes"][keep].cpu(), labels=text, colors=colours, width=2)


def draw_segmentation(image: torch.Tensor, pred: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """The image blended with the colour of each pixel's predicted class (`pred`: (H, W) class indices)."""
    colours = palette(int(pred.max()) + 1)[pred.cpu().long()].permute(2, 0, 1)
    return (image.float() * (1 - alpha) + colours.float() * alpha).round().to(torch.uint8)


def write_picture(picture: torch.Tensor, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(picture, str(path))
    return path


@torch.no_grad()
def predict_detection(
    checkpoint: str,
    images: Sequence[str],
    output: str | None = None,
    score_threshold: float = 0.5,
    device: str | None = None,
) -> list[tuple[Path, int]]:
    """`mambaout detect predict`: draw each image's detections to a PNG; returns (picture path, objects drawn)."""
    from mambaout.dense.detect import load_detector

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, ckpt = load_detector(checkpoint, device)
    model = fuse_for_inference(model)  # oneDNN-fused backbone blocks on CPU, same outputs
    names = [c["name"] for c in ckpt["categories"]]
    written = []
    for path in images:
        image = read_image(path)
        out = model([image.float().div(255).to(device)])[0]
        picture = draw_detections(image, out, names, score_threshold)
        written.append(
            (
                write_picture(picture, _output_path(path, output, len(images))),
                int((out["scores"] >= score_threshold).sum()),
            )
        )
    return written


@torch.no_grad()
def predict_segmentation(
    checkpoint: str,
    images: Sequence[str],
    output: str | None = None,
    multi_scale: bool = False,
    device: str | None = None,
) -> list[tuple[Path, int]]:
    """`mambaout segment predict`: each image's colour-coded segmentation as a PNG; returns (path, classes seen)."""
    from mambaout.dense.segment import MULTI_SCALE_RATIOS, load_segmenter, predict_probs

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, ckpt = load_segmenter(checkpoint, device)
    model = fuse_for_inference(model)
    cfg = ckpt["config"]
    written = []
    for path in images:
        image = read_image(path)
        ratios = MULTI_SCALE_RATIOS if multi_scale else (1.0,)
        probs = predict_probs(
            model, image, tuple(cfg["scale"]), ratios, multi_scale, cfg["eval_mode"], cfg["crop_size"]
        )
        pred = probs.argmax(0)
        written.append(
            (
                write_picture(draw_segmentation(image, pred), _output_path(path, output, len(images))),
                int(pred.unique().numel()),
            )
        )
    return written


def _output_path(image: str, output: str | None, count: int) -> Path:
    """`output` itself for one image and a .png name, else <stem>_pred.png in the folder `output` (or the image's)."""
    if output and count == 1 and output.lower().endswith(".png"):
        return Path(output)
    folder = Path(output) if output else Path(image).parent
    return folder / f"{Path(image).stem}_pred.png"
