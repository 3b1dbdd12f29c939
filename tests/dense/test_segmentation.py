"""UperNet end to end on generated ADE20K-layout data: the head, the data pipeline, mIoU, train -> eval -> predict."""

import json

import pytest
import torch
from torchvision.io import decode_image

from mambaout.cli import main
from mambaout.dense import ADE20K, upernet
from mambaout.dense.ade20k import IGNORE_INDEX, TrainTransform
from mambaout.dense.segment import confusion_matrix, predict_probs, segmentation_metrics, slide_logits
from mambaout.errors import UserError
from mambaout.measure.cost import count_params


def test_upernet_returns_logits_at_input_size_and_the_aux_head_only_in_training():
    model = upernet("mambaout_pico", num_classes=5, channels=32, aux_channels=16)
    x = torch.randn(2, 3, 64, 96)
    out = model.train()(x)
    assert out["out"].shape == out["aux"].shape == (2, 5, 64, 96)
    assert set(model.eval()(x)) == {"out"}


def test_upernet_head_has_mmsegs_shape():
    # UPerHead(512) + FCNHead(256) on MambaOut-Tiny's (96, 192, 384, 576) channels, as the paper's 54M needs
    with torch.device("meta"):
        model = upernet("mambaout_tiny", num_classes=150)
    ppm = 4 * (576 * 512 + 2 * 512) + (576 + 4 * 512) * 512 * 9 + 2 * 512  # 1x1 per pool size, 3x3 bottleneck, BNs
    fpn = (96 + 192 + 384) * 512 + 3 * 1024 + 3 * (512 * 512 * 9 + 1024) + 4 * 512 * 512 * 9 + 1024
    assert count_params(model.decode_head) == ppm + fpn + 512 * 150 + 150 == 30_219_414
    assert count_params(model.aux_head) == 384 * 256 * 9 + 2 * 256 + 256 * 150 + 150 == 923_798
    assert len(model.decode_head.ppm.stages) == 4


def test_ade20k_labels_shift_down_and_zero_becomes_ignore(ade_root):
    ds = ADE20K(ade_root, "training", num_classes=3)
    image, label = ds[0]
    raw = decode_image(str(ds.labels[0]))[0].long()
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    assert torch.equal(label == IGNORE_INDEX, raw == 0)
    assert torch.equal(label[raw > 0], raw[raw > 0] - 1)
    assert set(label.unique().tolist()) == {0, 1, 2, IGNORE_INDEX}


def test_labels_beyond_num_classes_and_a_wrong_folder_are_errors(ade_root, tmp_path):
    with pytest.raises(UserError, match="has class 3 but the model has 2 classes"):
        ADE20K(ade_root, "training", num_classes=2)[0]
    with pytest.raises(UserError, match="does not have the ADE20K layout"):
        ADE20K(tmp_path, "training")


def test_training_pipeline_gives_normalised_crops_with_ignore_padding(ade_root):
    torch.manual_seed(0)
    ds = ADE20K(ade_root, "training", TrainTransform(crop_size=48, scale=(128, 32), ratio_range=(1.0, 1.0)), 3)
    image, label = ds[0]  # rescaled to 32x32, so padded up to 48
    assert image.shape == (3, 48, 48) and label.shape == (48, 48)
    assert (label[32:, :] == IGNORE_INDEX).all() and (label[:, 32:] == IGNORE_INDEX).all()
    assert image[:, :32, :32].mean().abs() < 2 and (image[:, 32:, :] == 0).all()


def test_miou_from_a_known_confusion():
    label = torch.tensor([0, 0, 1, 1, 2, IGNORE_INDEX])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(pred, label, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    m = segmentation_metrics(cm)
    # IoU: class 0 1/3, class 1 2/3, class 2 0/2, class 3 absent (left out of the mean)
    assert m["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert m["aAcc"] == pytest.approx(3 / 5) and m["mAcc"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["IoU"][3] is None


def test_sliding_windows_equal_whole_image_inference_when_one_window_covers_it():
    model = upernet("mambaout_pico", num_classes=3, channels=16, aux_channels=0).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(slide_logits(model, x, 64, 43), model(x)["out"], atol=1e-6)
        windows = slide_logits(model, torch.randn(1, 3, 64, 96), 64, 32)  # two overlapping windows
    assert windows.shape == (1, 3, 64, 96)


def test_multi_scale_flip_averages_probabilities_at_the_original_size():
    model = upernet("mambaout_pico", num_classes=3, channels=16, aux_channels=0).eval()
    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    probs = predict_probs(model, image, scale=(256, 64), ratios=(0.5, 1.0, 1.5), flip=True)
    assert probs.shape == (3, 40, 56)
    assert torch.allclose(probs.sum(0), torch.ones(40, 56), atol=1e-5)


@pytest.fixture(scope="module")
def trained(ade_root, tmp_path_factory):
    """`mambaout segment train` for 30 iterations of batch 2 on the generated data."""
    out = tmp_path_factory.mktemp("seg")
    args = "--num-classes 3 --iterations 30 --batch-size 2 --lr 3e-3 --warmup-iters 5 --crop-size 64 --scale 256 64"
    args += " --channels 32 --aux-channels 16 --workers 0 --eval-every 0 --log-every 1"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the per-test one_thread
    try:
        rc = main(
            ["segment", "train", "--backbone", "mambaout_pico", "--ade20k", str(ade_root), "--output", str(out)]
            + args.split()
        )
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    return out


def test_training_lowers_the_loss_and_writes_a_run_folder(trained):
    assert {p.name for p in trained.iterdir()} >= {"config.json", "log.jsonl", "last.pt", "metrics.json"}
    records = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 30
    chance = 1.4 * torch.log(torch.tensor(3.0)).item()  # (1 + aux weight 0.4) x cross-entropy of a uniform guess
    assert sum(losses[:5]) / 5 == pytest.approx(chance, rel=0.1)
    assert sum(losses[-10:]) / 10 < 0.75 * chance


def test_evaluation_gives_miou_single_and_multi_scale(trained, ade_root, capsys):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics) == {"mIoU", "mAcc", "aAcc", "IoU"} and len(metrics["IoU"]) == 3
    assert 0.4 < metrics["mIoU"] <= 1 and 0.4 < metrics["aAcc"] <= 1  # three big coloured blocks are easy
    ckpt = str(trained / "last.pt")
    assert main(["segment", "eval", "--checkpoint", ckpt, "--ade20k", str(ade_root), "--multi-scale", "--json"]) == 0
    multi = json.loads(capsys.readouterr().out)
    assert 0.4 < multi["mIoU"] <= 1 and multi["mIoU"] != metrics["mIoU"]  # measured 0.88 single, 0.88 multi


def test_predict_writes_the_colour_coded_segmentation_at_the_image_size(trained, ade_root, tmp_path, capsys):
    image = sorted((ade_root / "images" / "validation").iterdir())[0]
    rc = main(["segment", "predict", str(image), "--checkpoint", str(trained / "last.pt"), "--output", str(tmp_path)])
    assert rc == 0
    picture = decode_image(str(tmp_path / f"{image.stem}_pred.png"))
    assert picture.shape == (3, 64, 64)
    assert "classes" in capsys.readouterr().out


def test_batch_of_one_is_refused_before_batchnorm_fails(ade_root, tmp_path, capsys):
    args = ["--ade20k", str(ade_root), "--output", str(tmp_path), "--batch-size", "1", "--device", "cpu"]
    assert main(["segment", "train", "--backbone", "mambaout_pico", *args]) == 2
    assert "UperNet's BatchNorm needs at least 2 images per batch; use --batch-size 2" in capsys.readouterr().err
