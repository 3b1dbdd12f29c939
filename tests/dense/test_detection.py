"""Mask R-CNN end to end on generated COCO-format data: the data conventions, the errors, train -> eval -> predict."""

import json
import shutil

import pytest
import torch
from torchvision.io import decode_image

from mambaout.cli import main
from mambaout.dense import CocoInstances, mask_rcnn
from mambaout.dense.detect import check_num_classes, load_detector
from mambaout.errors import UserError

TINY_HEADS = ["--fpn-channels", "32", "--box-fc-channels", "64", "--mask-channels", "32"]


def test_mask_rcnn_counts_the_background_in_num_classes_and_returns_boxes_labels_scores_masks():
    model = mask_rcnn("mambaout_pico", num_classes=3, min_size=64, max_size=64, fpn_channels=32).eval()
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3
    with torch.no_grad():
        out = model([torch.rand(3, 48, 80)])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"}
    assert out["masks"].shape[1:] == (1, 48, 80)  # pasted back at the input size


def test_coco_reader_maps_category_ids_in_order_and_skips_crowds(coco_root):
    ds = CocoInstances(coco_root, "train2017", train=True)
    assert ds.category_ids == [3, 7] and ds.category_names == ["square", "triangle"] and ds.num_classes == 3
    ds.flip = None
    image, target = ds[1]  # a square, a triangle and a crowd region
    assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
    assert target["labels"].tolist() == [1, 2]  # crowd region left out; ids 3, 7 -> labels 1, 2
    assert target["masks"].shape == (2, 64, 64)
    box = target["boxes"][0]
    ys, xs = torch.nonzero(target["masks"][0], as_tuple=True)
    assert box[0] == pytest.approx(xs.min().item(), abs=1) and box[3] == pytest.approx(ys.max().item() + 1, abs=1)


def test_images_without_objects_are_kept_for_eval_but_not_trained_on(coco_root):
    assert len(CocoInstances(coco_root, "train2017")) == 9
    train = CocoInstances(coco_root, "train2017", train=True)
    assert len(train) == 8
    empty = CocoInstances(coco_root, "train2017")[8][1]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 64, 64)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ('{"images": []}', "needs the lists 'images', 'annotations' and 'categories'"),
        (
            '{"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [{"id": 5, "image_id": 1, '
            '"category_id": 9, "bbox": [0, 0, 1, 1], "segmentation": []}]}',
            "category_id 9",
        ),
        ('{"images": [], "categories": [], "annotations": [{"id": 5, "image_id": 2}]}', "image_id 2"),
    ],
)
def test_bad_annotation_files_are_one_sentence_errors(tmp_path, content, message):
    (tmp_path / "val2017").mkdir()
    if content is not None:
        (tmp_path / "annotations").mkdir()
        (tmp_path / "annotations" / "instances_val2017.json").write_text(content)
    with pytest.raises(UserError, match=message):
        CocoInstances(tmp_path, "val2017")


def test_too_few_classes_for_the_annotations_is_an_error(coco_root):
    with pytest.raises(UserError, match="have 2 categories but num_classes=2 leaves room for 1"):
        check_num_classes(2, CocoInstances(coco_root, "val2017"))


@pytest.fixture(scope="module")
def trained(coco_root, tmp_path_factory):
    """`mambaout detect train` for 32 steps (8 epochs of 8 images, batch 2) on the generated data.

    Box/mask AP50 after 32 steps, measured over seeds 0-4 at 1 thread and seeds 2-3 at 2 threads: 0.44-1.0 (16 steps
    gave 0.06-0.48 across machines, too close to the 0.1 bound below).
    """
    out = tmp_path_factory.mktemp("det")
    args = "--epochs 8 --batch-size 2 --lr 1e-3 --warmup-iters 0 --min-size 64 --max-size 64 --workers 0"
    args += " --eval-every 0 --log-every 1"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the per-test one_thread
    try:
        rc = main(
            ["detect", "train", "--backbone", "mambaout_pico", "--coco", str(coco_root), "--output", str(out)]
            + args.split()
            + TINY_HEADS
        )
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    return out


def test_training_lowers_the_loss_and_writes_a_run_folder(trained):
    assert {p.name for p in trained.iterdir()} >= {"config.json", "log.jsonl", "last.pt", "metrics.json"}
    records = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 32
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4
    assert json.loads((trained / "config.json").read_text())["num_classes"] == 3


def test_evaluation_gives_coco_box_and_mask_ap(trained, coco_root, capsys):
    metrics = json.loads((trained / "metrics.json").read_text())
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert set(metrics) == {f"{t}_{n}" for t in ("bbox", "segm") for n in names}
    # every object here is small by COCO's measure (area < 32²): medium and large have no objects, COCO's -1
    assert {k: v for k, v in metrics.items() if k.endswith(("APm", "APl"))} == dict.fromkeys(
        ["bbox_APm", "bbox_APl", "segm_APm", "segm_APl"], -1.0
    )
    assert all(0 <= v <= 1 for k, v in metrics.items() if not k.endswith(("APm", "APl")))
    assert metrics["bbox_AP50"] > 0.1 and metrics["segm_AP50"] > 0.1  # 32 steps already find the shapes
    assert main(["detect", "eval", "--checkpoint", str(trained / "last.pt"), "--coco", str(coco_root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(metrics)


def test_predict_draws_the_detections_onto_a_png_of_the_image_size(trained, coco_root, tmp_path, capsys):
    image = coco_root / "val2017" / "000000000100.jpg"
    out = tmp_path / "pred.png"
    ckpt = str(trained / "last.pt")
    rc = main(["detect", "predict", str(image), "--checkpoint", ckpt, "--output", str(out), "--score-threshold", "0"])
    assert rc == 0
    picture, original = decode_image(str(out)), decode_image(str(image))
    assert picture.shape == original.shape == (3, 64, 64)
    assert "objects" in capsys.readouterr().out
    assert (picture.int() - original.int()).abs().sum() > 0  # something was drawn


def test_eval_on_data_with_other_categories_is_an_error(trained, coco_root, tmp_path, capsys):
    shutil.copytree(coco_root / "val2017", tmp_path / "val2017")
    data = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    data["categories"].append(dict(id=9, name="circle"))
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    assert main(["detect", "eval", "--checkpoint", str(trained / "last.pt"), "--coco", str(tmp_path)]) == 2
    assert "the model knows 2 categories but the annotation file has 3" in capsys.readouterr().err


def test_a_segmentation_checkpoint_is_refused_by_detect(tmp_path):
    torch.save({"task": "segment", "model": {}}, tmp_path / "last.pt")
    with pytest.raises(UserError, match="is a 'segment' checkpoint"):
        load_detector(str(tmp_path / "last.pt"))
