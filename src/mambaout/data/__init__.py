"""Data for training and evaluation: the built-in digits, ImageNet-layout folders, timm transforms and Mixup.

Example:
    >>> from mambaout.data import build_splits, eval_transform, train_transform
    >>> splits = build_splits(None, train_transform(32, hflip=0.0), eval_transform(32))  # the built-in digits
"""

from mambaout.data.corrupt import SkipBadImages
from mambaout.data.digits import DIGITS_CLASSES, digits_splits
from mambaout.data.folder import eval_folder, image_folder_splits
from mambaout.data.loader import EpochSampler, eval_loader, train_loader
from mambaout.data.seeding import SeededSamples
from mambaout.data.splits import Splits, build_splits
from mambaout.data.transforms import batch_mixup, eval_transform, train_transform

__all__ = [
    "DIGITS_CLASSES",
    "EpochSampler",
    "SeededSamples",
    "SkipBadImages",
    "Splits",
    "batch_mixup",
    "build_splits",
    "digits_splits",
    "eval_folder",
    "eval_loader",
    "eval_transform",
    "image_folder_splits",
    "train_loader",
    "train_transform",
]
