"""Digits split, data order, per-sample augmentation and timm transforms: what makes runs repeatable."""

import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from torch.utils.data import TensorDataset

from mambaout.data import EpochSampler, SeededSamples, batch_mixup, digits_splits, eval_transform, train_transform


def test_digits_split_is_stratified_fixed_and_upscaled():
    train, val = digits_splits(32)
    assert (len(train), len(val)) == (1437, 360)
    assert [Counter(val.targets)[d] for d in range(10)] == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]  # 20 % of each
    again, _ = digits_splits(32)
    assert train.targets == again.targets and train.images[5].tobytes() == again.images[5].tobytes()
    image = np.asarray(val.images[0])
    assert image.shape == (32, 32, 3) and image.min() == 0 and image.max() >= 240


def test_n_processes_batches_together_are_one_process_batch_of_n_times_b():
    data = TensorDataset(torch.arange(103))
    one = list(EpochSampler(data, seed=7))
    ranks = [list(EpochSampler(data, num_replicas=2, rank=r, seed=7)) for r in (0, 1)]
    b = 4
    for k in range(len(ranks[0]) // b):
        union = sorted(ranks[0][k * b : (k + 1) * b] + ranks[1][k * b : (k + 1) * b])
        assert union == sorted(one[2 * b * k : 2 * b * (k + 1)])
    resumed = EpochSampler(data, seed=7)
    resumed.skip = 40
    assert list(resumed) == one[40:] and len(resumed) == 63
    resumed.set_epoch(1)
    assert list(resumed) != one[40:]


def test_a_samples_augmentation_depends_on_seed_epoch_and_index_only():
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (24, 24, 3), dtype=np.uint8)) for i in range(3)]
    augment = train_transform(16, auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25)

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return augment(images[i])

    data = SeededSamples(Images(), seed=0)
    first = data[1]
    torch.manual_seed(123)
    random.seed(5)
    state = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    assert torch.equal(data[1], first)  # whatever the caller's generators hold...
    # ...and they stay as they were
    assert torch.equal(torch.get_rng_state(), state[0]) and random.getstate() == state[1]
    assert np.array_equal(np.random.get_state()[1], state[2])
    data.set_epoch(1)
    assert not torch.equal(data[1], first)
    assert not torch.equal(SeededSamples(Images(), seed=1)[1], first)


def test_train_transform_is_the_papers_timm_pipeline():
    t = train_transform(224)
    kinds = [type(x).__name__ for x in t.transforms]
    rand_aug = next(x for x in t.transforms if isinstance(x, RandAugment))
    erasing = next(x for x in t.transforms if isinstance(x, RandomErasing))
    assert kinds[0] == "RandomResizedCropAndInterpolation" and t.transforms[0].scale == (0.08, 1.0)
    assert len(rand_aug.ops) == 15 and rand_aug.num_layers == 2 and rand_aug.ops[0].magnitude == 9
    assert rand_aug.ops[0].magnitude_std == 0.5
    assert (erasing.probability, erasing.mode) == (0.25, "pixel")
    assert "ColorJitter" not in kinds  # timm drops colour jitter when RandAugment is on, as the paper's runs did
    assert "ColorJitter" in [type(x).__name__ for x in train_transform(224, auto_augment=None).transforms]


def test_randaugment_at_full_magnitude_runs_under_recent_pillow():
    t = train_transform(16, auto_augment="rand-n3-m10-mstd0-inc1", reprob=0.0)  # posterize to 0 bits included
    image = Image.fromarray(np.full((16, 16, 3), 200, np.uint8))
    random.seed(0)
    assert len({t(image).sum().item() for _ in range(200)}) > 10


def test_building_the_augmentation_leaves_timms_global_op_table_alone():
    from timm.data import auto_augment

    before = dict(auto_augment.NAME_TO_OP)
    train_transform(16, auto_augment="rand-n3-m10-mstd0-inc1", reprob=0.0)
    assert (
        auto_augment.NAME_TO_OP == before and auto_augment.NAME_TO_OP["PosterizeIncreasing"] is auto_augment.posterize
    )


def test_eval_transform_resizes_crops_and_normalises_like_timm():
    t = eval_transform(224)
    kinds = [type(x).__name__ for x in t.transforms]
    assert kinds == ["Resize", "CenterCrop", "MaybeToTensor", "Normalize"]
    out = t(Image.new("RGB", (300, 200), (124, 116, 104)))
    assert out.shape == (3, 224, 224) and out.abs().max() < 0.01  # ImageNet mean maps to ~0


def test_mixup_makes_soft_targets_with_label_smoothing():
    mix = batch_mixup(10, mixup=0.8, cutmix=1.0, smoothing=0.1)
    torch.manual_seed(0)
    np.random.seed(0)
    images, targets = mix(torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    assert targets.shape == (4, 10) and torch.allclose(targets.sum(1), torch.ones(4))
    assert targets.min() == pytest.approx(0.01)  # smoothing 0.1 spread over 10 classes
    assert batch_mixup(10, mixup=0.0, cutmix=0.0) is None
