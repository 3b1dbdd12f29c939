"""Tiny generated datasets in the COCO and ADE20K layouts.

COCO-format: 64x64 JPEGs of red squares (category id 3, "square") and green triangles (category id 7, "triangle": ids
need not be contiguous) on noisy grey, polygon masks; one image without objects, one crowd region given as RLE.
ADE20K layout: 64x64 JPEGs whose label maps hold classes 1..3 as coloured blocks and a 0 ("ignore") border.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from torchvision.io import write_jpeg, write_png

SIZE = 64
COLOURS = {3: (220, 40, 40), 7: (40, 200, 40)}


def _noisy_background(rng: np.random.Generator) -> np.ndarray:
    return (110 + rng.integers(-20, 20, (SIZE, SIZE, 3))).astype(np.uint8)


def _polygon_mask(polygon: list[float]) -> np.ndarray:
    rle = mask_utils.frPyObjects([polygon], SIZE, SIZE)
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def write_coco_split(root: Path, split: str, n_images: int, seed: int) -> Path:
    """n_images object images + 1 empty image, COCO json at annotations/instances_<split>.json."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n_images + 1):
        image_id = 100 + i
        pixels = _noisy_background(rng)
        objects = [] if i == n_images else [(3, "square"), (7, "triangle")][: 1 + i % 2]
        for k, (cat, shape) in enumerate(objects):
            x0, y0 = (4 + rng.integers(0, 8), 4 + rng.integers(0, 8)) if k == 0 else (34, 30 + rng.integers(0, 4))
            s = int(22 + rng.integers(0, 6))
            if shape == "square":
                poly = [x0, y0, x0 + s, y0, x0 + s, y0 + s, x0, y0 + s]
            else:
                poly = [x0, y0 + s, x0 + s, y0 + s, x0 + s / 2, y0]
            poly = [float(v) for v in poly]
            mask = _polygon_mask(poly)
            pixels[mask] = COLOURS[cat]
            ys, xs = np.nonzero(mask)
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            anns.append(
                dict(
                    id=len(anns) + 1,
                    image_id=image_id,
                    category_id=cat,
                    segmentation=[poly],
                    bbox=bbox,
                    area=float(mask.sum()),
                    iscrowd=0,
                )
            )
        if i == 1:  # a crowd region (RLE), which COCO never uses as a training target
            crowd = np.zeros((SIZE, SIZE), np.uint8, order="F")
            crowd[50:60, 2:20] = 1
            rle = mask_utils.encode(crowd)
            anns.append(
                dict(
                    id=len(anns) + 1,
                    image_id=image_id,
                    category_id=3,
                    iscrowd=1,
                    area=180.0,
                    bbox=[2.0, 50.0, 18.0, 10.0],
                    segmentation=dict(size=rle["size"], counts=rle["counts"].decode()),
                )
            )
        name = f"{image_id:012d}.jpg"
        write_jpeg(torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), str(root / split / name), quality=95)
        images.append(dict(id=image_id, file_name=name, height=SIZE, width=SIZE))
    data = dict(images=images, annotations=anns, categories=[dict(id=3, name="square"), dict(id=7, name="triangle")])
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    write_coco_split(root, "train2017", 8, seed=0)
    write_coco_split(root, "val2017", 4, seed=1)
    return root


def write_ade_split(root: Path, split: str, n_images: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    colours = {1: (200, 50, 50), 2: (50, 200, 50), 3: (50, 50, 200)}
    for i in range(n_images):
        label = np.zeros((SIZE, SIZE), np.uint8)  # 0: "other", ignored
        cut_y, cut_x = int(rng.integers(20, 44)), int(rng.integers(20, 44))
        label[2:cut_y, 2:-2] = 1
        label[cut_y:-2, 2:cut_x] = 2
        label[cut_y:-2, cut_x:-2] = 3
        pixels = _noisy_background(rng)
        for c, rgb in colours.items():
            pixels[label == c] = rgb
        name = f"ADE_{split}_{i:08d}"
        write_jpeg(torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), str(root / "images" / split / f"{name}.jpg"))
        write_png(torch.from_numpy(label)[None], str(root / "annotations" / split / f"{name}.png"))


@pytest.fixture(scope="session")
def ade_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ADEChallengeData2016")
    write_ade_split(root, "training", 6, seed=0)
    write_ade_split(root, "validation", 3, seed=1)
    return root
