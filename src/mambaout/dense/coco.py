"""COCO-format instance segmentation data for Mask R-CNN.

Layout: `<root>/annotations/instances_<split>.json` and the images in `<root>/<split>/` (COCO 2017: train2017,
val2017). Annotations follow the COCO conventions as mmdetection reads them: crowd regions and boxes under 1 pixel wide
or high are not training targets; polygons and RLE both become binary masks (pycocotools); category ids, which need
not be contiguous (COCO's run 1..90 for 80 classes), map in sorted order to labels 1..K (0 is the background). Images
without a usable object stay in evaluation and are left out of training (mmdetection's `filter_empty_gt`).
Resizing and normalisation happen inside the model; the only training augmentation of the 1x schedule is a
horizontal flip.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from mambaout.errors import UserError


def annotation_path(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{split}.json"


def load_coco(path: str | os.PathLike) -> COCO:
    """Read and check a COCO annotation file; every defect a user can cause is one UserError sentence."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"COCO annotation file {path} does not exist; expected <coco>/annotations/instances_<split>.json"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"COCO annotation file {path} is not valid JSON ({e}); re-download or re-export it") from e
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise UserError(
            f"{path} is not a COCO instances file: it needs the lists 'images', 'annotations' and 'categories'"
        )
    image_ids = {im.get("id") for im in data["images"]}
    category_ids = {c.get("id") for c in data["categories"]}
    for ann in data["annotations"]:
        if ann.get("image_id") not in image_ids:
            raise UserError(
                f"{path}: annotation {ann.get('id')} refers to image_id {ann.get('image_id')}, not in 'images'"
            )
        if ann.get("category_id") not in category_ids:
            raise UserError(
                f"{path}: annotation {ann.get('id')} has category_id {ann.get('category_id')}, "
                f"which is not among the file's {len(category_ids)} categories"
            )
        if "bbox" not in ann or "segmentation" not in ann:
            raise UserError(f"{path}: annotation {ann.get('id')} lacks 'bbox' or 'segmentation'; Mask R-CNN needs both")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


class CocoInstances(torch.utils.data.Dataset):
    """(image, target) pairs: a float (3, H, W) image in [0, 1] and torchvision's detection target dict
    (boxes xyxy, labels 1..K, masks (N, H, W) uint8, image_id).

    Example:
        >>> ds = CocoInstances("/datasets/coco", "val2017")  # doctest: +SKIP
        >>> image, target = ds[0]  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike, split: str, train: bool = False, max_images: int | None = None):
        self.images_dir = Path(root) / split
        self.coco = load_coco(annotation_path(root, split))
        if not self.images_dir.is_dir():
            raise UserError(f"image folder {self.images_dir} does not exist; the COCO layout is <coco>/{split}/*.jpg")
        self.category_ids = sorted(self.coco.cats)
        self.category_names = [self.coco.cats[c].get("name", str(c)) for c in self.category_ids]
        self.label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        ids = sorted(self.coco.imgs)
        if train:
            ids = [i for i in ids if any(_usable(a) for a in self.coco.imgToAnns.get(i, []))]
            if not ids:
                raise UserError(f"no image of {split} has a non-crowd object, so there is nothing to train on")
        self.ids = ids[:max_images] if max_images else ids
        self.flip = v2.RandomHorizontalFlip(0.5) if train else None

    @property
    def num_classes(self) -> int:
        """Labels the model needs, background included."""
        return len(self.category_ids) + 1

    def __len__(self) -> int:
        return len(self.ids)

    def read_image(self, image_id: int) -> torch.Tensor:
        path = self.images_dir / self.coco.imgs[image_id]["file_name"]
        try:
            return decode_image(str(path), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError) as e:
            raise UserError(
                f"could not read image {path} listed in the annotations ({e}); is it missing or corrupt?"
            ) from e

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        image = tv_tensors.Image(self.read_image(image_id))
        h, w = image.shape[-2:]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if _usable(a)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        masks = np.stack([self.coco.annToMask(a) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
        if masks.shape[1:] != (h, w):
            raise UserError(f"image {image_id} is {w}x{h} but its annotation says {masks.shape[2]}x{masks.shape[1]}")
        target = dict(
            boxes=v2.functional.clamp_bounding_boxes(
                tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w))
            ),
            labels=torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            masks=tv_tensors.Mask(torch.from_numpy(masks)),
            image_id=image_id,
        )
        if self.flip is not None:
            image, target = self.flip(image, target)
        return v2.functional.to_dtype(image, torch.float32, scale=True).as_subclass(torch.Tensor), target


def _usable(ann: dict[str, Any]) -> bool:
    """mmdetection's rule: no crowd regions, no boxes under one pixel, no empty areas."""
    x, y, w, h = ann["bbox"]
    return not ann.get("iscrowd", 0) and w >= 1 and h >= 1 and ann.get("area", w * h) > 0


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Detection batches are lists: images keep their own sizes until the model resizes and pads them."""
    images, targets = zip(*batch)
    return list(images), list(targets)
