"""The patch branch: a k-center coreset that covers its bank, a fast nearest-neighbour search and blur equal to their
plain versions, and maps whose maximum lands on the defects the line paints, frame and pixel AUROC with margin."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from mambaout.anomaly.encoder import batched
from mambaout.anomaly.line import Line, LineConfig
from mambaout.anomaly.patch import PatchBranch, blur, build_patch_branch, gaussian_kernel, kcenter_coreset


def clustered_points(seed: int, n: int = 3000, dim: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(20, dim, generator=g) * 4
    return centres[torch.randint(20, (n,), generator=g)] + torch.randn(n, dim, generator=g) * 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_point_lies_within_the_coresets_covering_radius_and_the_centres_are_that_far_apart(seed):
    points = clustered_points(seed)
    chosen, radius = kcenter_coreset(points, 64, seed)
    assert len(set(chosen.tolist())) == 64
    nearest = torch.cdist(points.double(), points[chosen].double()).min(1).values
    assert float(nearest.max()) == pytest.approx(radius, rel=1e-4)  # the radius returned is the true one
    # greedy k-center: the picks are pairwise >= radius apart, so no 64 points cover with less than radius / 2
    between = torch.cdist(points[chosen].double(), points[chosen].double()) + torch.eye(64) * 1e9
    assert float(between.min()) >= radius * (1 - 1e-4)
    # 20 clusters of spread 0.3: 64 centres cover every cluster, far below the clusters' distance (~4 sqrt(2 dim))
    assert radius < 2.0


def test_the_coreset_is_deterministic_for_a_seed():
    points = clustered_points(0)
    a, ra = kcenter_coreset(points, 50, seed=3)
    b, rb = kcenter_coreset(points, 50, seed=3)
    c, _ = kcenter_coreset(points, 50, seed=4)
    assert torch.equal(a, b) and ra == rb and not torch.equal(a, c)
    assert kcenter_coreset(points[:40], 50)[0].tolist() == list(range(40))  # fewer points than asked: all of them


def test_nearest_neighbour_distances_equal_cdist():
    torch.manual_seed(0)
    branch = PatchBranch(dict(backbone="random"), bank_size=300)
    branch.set_bank(torch.randn(300, branch.args["dim"]))
    features = torch.randn(2, branch.args["dim"], 16, 16)
    flat = features.permute(0, 2, 3, 1).reshape(-1, branch.args["dim"])
    expected = torch.cdist(flat.double(), branch.bank.double()).min(1).values.view(2, 16, 16)
    torch.testing.assert_close(branch.distances(features).double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sigma,size", [(4.0, 64), (4.0, 32), (1.5, 20)])
def test_the_blur_is_scipys_gaussian_filter(sigma, size):
    x = torch.rand(2, size, size + 3)
    ours = blur(x, gaussian_kernel(sigma)).numpy()
    # torch's "reflect" pads without repeating the edge: scipy's "mirror"; both cut the kernel at 4 sigma
    expected = np.stack([gaussian_filter(m.numpy().astype(np.float64), sigma, mode="mirror") for m in x])
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_maps_have_the_frame_size_and_a_normal_bank_gives_zero_on_its_own_frames():
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 48, 40, 3), dtype=np.uint8))
    branch, facts = build_patch_branch([frames], dict(backbone="random"), bank_size=10_000)
    assert facts["bank"] == facts["patches"] == 3 * 24 * 20 and facts["covering_radius"] == 0.0
    maps = branch.maps(frames)
    assert maps.shape == (3, 48, 40) and maps.dtype == torch.float32
    assert float(maps.abs().max()) < 1e-2  # every patch is in the bank (rounding of |q|² - 2q·m + |m|² only)


# -- maps against the defects the line paints ---------------------------------------------------------------------
LINE = LineConfig(frames=600, test_frames=400)


def defect_masks(line: Line, plan) -> np.ndarray:
    """(T, n, n) bool: the pixels of spots and foreign objects, drawn where `Line.render` draws them."""
    n = line.config.size
    masks = np.zeros((len(plan.belt), n, n, 3), np.uint8)
    for t, belt in enumerate(plan.belt):
        for j in set(plan.spots) | plan.foreign:
            x = int(round(belt - j * line.gap))
            if j in plan.foreign:
                line._paste(masks[t], line.blob_mask, (1, 1, 1), x - line.gap // 2, n // 2 - line.blob // 2)
            if j in plan.spots:
                r, col = plan.spots[j]
                line._paste(masks[t], line.blob_mask, (1, 1, 1), x + col, line.item_row + r)
    return masks[..., 0] > 0


def defective_video(line: Line, seed: int):
    """A normal stretch of line with a spot on every other item and a foreign object after every fourth."""
    rng = np.random.default_rng([seed, 9])
    plan = line.plan(LINE.test_frames, rng, anomalies=False)
    for j, kind in enumerate(plan.slot_kind):
        if j % 2 == 0:
            rows, cols = np.nonzero(line.sprites[kind][1 : 1 - line.blob, 1 : 1 - line.blob])
            pick = int(rng.integers(rows.size))
            plan.spots[j] = (int(rows[pick]) + 1, int(cols[pick]) + 1)
        elif j % 4 == 1:
            plan.foreign.add(j)
    return np.stack([line.render(plan, t) for t in range(LINE.test_frames)]), defect_masks(line, plan)


@pytest.mark.parametrize("seed", [0, 1])
def test_maps_find_the_lines_local_defects(seed):
    line = Line(LineConfig(**{**LINE.__dict__, "seed": seed}))
    plan = line.plan(LINE.frames, np.random.default_rng([seed, 0]), anomalies=False)
    drawn = np.sort(np.random.default_rng(seed).choice(LINE.frames, 200, replace=False))
    normal = np.stack([line.render(plan, t) for t in drawn])
    branch, _ = build_patch_branch(batched(normal, 64), dict(backbone="random", seed=seed), 512, seed)
    frames, masks = defective_video(line, seed)
    maps = torch.cat([branch.maps(b) for b in batched(frames, 100)]).numpy()
    defective = masks.any((1, 2))
    assert 0.3 < defective.mean() < 0.7
    frame_auroc = roc_auc_score(defective, maps.reshape(len(maps), -1).max(1))
    pixel_auroc = roc_auc_score(masks.ravel(), maps.ravel())
    hits = np.mean([masks[t].ravel()[maps[t].argmax()] for t in np.flatnonzero(defective)])
    # measured over seeds 0-3: frame AUROC 0.995-1.000, pixel AUROC 0.997-0.998, maximum on the defect in 94-98 %
    assert frame_auroc >= 0.98 and pixel_auroc >= 0.99 and hits >= 0.88, (frame_auroc, pixel_auroc, hits)
