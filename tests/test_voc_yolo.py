"""Pascal VOC and YOLO label folders: reading, checks and clear errors, evaluation (COCO and VOC mAP),
and tools/convert_dataset.py. The folders are tiny ones the tests write."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from retdet.data import DatasetFormatError, get_dataset, register_from_config, register_voc, register_yolo
from retdet.data.catalog import _CACHE, _LOADERS
from retdet.data.voc import load_voc, voc_to_coco
from retdet.data.yolo import load_yolo, read_names
from retdet.evaluation import COCOEvaluator
from retdet.evaluation.voc_metric import class_recall_precision, voc_ap, voc_detection_map
from retdet.structures import Detections, ImageSample
from retdet.tools.convert_dataset import main as convert_main

VOC_XML = """<annotation><filename>{id}.jpg</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
VOC_OBJ = ("<object><name>{name}</name><difficult>{difficult}</difficult>"
           "<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


def write_voc(root, images, split="test"):
    """images: {id: (w, h, [(name, difficult, (xmin, ymin, xmax, ymax)), ...])}."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for image_id, (w, h, objects) in images.items():
        objs = "".join(VOC_OBJ.format(name=n, difficult=d, x0=b[0], y0=b[1], x1=b[2], y1=b[3]) for n, d, b in objects)
        with open(os.path.join(root, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(VOC_XML.format(id=image_id, w=w, h=h, objects=objs))
        cv2.imwrite(os.path.join(root, "JPEGImages", f"{image_id}.jpg"), np.full((h, w, 3), 128, np.uint8))
    with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("\n".join(images) + "\n")


@pytest.fixture
def voc_root(tmp_path):
    root = str(tmp_path / "VOC2007")
    write_voc(root, {"000001": (60, 40, [("dog", 0, (1, 1, 20, 30)), ("cat", 1, (30, 5, 50, 35))]),
                     "000002": (50, 50, [("cat", 0, (10, 10, 40, 45))]),
                     "000003": (30, 30, [])})
    return root


def test_voc_reads_boxes_difficult_and_classes(voc_root):
    info = load_voc(voc_root, "test", name="voc_t")
    assert info.source_format == "voc" and len(info) == 3 and info.class_names[7] == "cat"
    r1 = info.records[0]
    assert r1.file_name == os.path.join(voc_root, "JPEGImages", "000001.jpg") and (r1.height, r1.width) == (40, 60)
    # 1-based inclusive (1, 1, 20, 30) -> continuous (0, 0, 20, 30); the difficult cat -> an ignore region
    np.testing.assert_allclose(r1.boxes, [[0, 0, 20, 30]])
    assert r1.labels.tolist() == [11]  # dog
    np.testing.assert_allclose(r1.ignore_boxes, [[29, 4, 50, 35]])
    assert len(info.records[2].boxes) == 0
    info = load_voc(voc_root, "test", class_names=["cat", "dog"])
    assert info.class_names == ["cat", "dog"] and info.records[0].labels.tolist() == [1]


def test_voc_errors_name_the_file(voc_root, tmp_path):
    with pytest.raises(DatasetFormatError, match=r"000001\.xml: object 0: class 'dog' is not one of"):
        load_voc(voc_root, "test", class_names=["cat"])
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/val\.txt.*splits here: \['test'\]"):
        load_voc(voc_root, "val")
    os.remove(os.path.join(voc_root, "JPEGImages", "000002.jpg"))
    with pytest.raises(DatasetFormatError, match=r"000002\.xml: its image is missing.*a label file without an image"):
        load_voc(voc_root, "test")
    cv2.imwrite(os.path.join(voc_root, "JPEGImages", "000002.png"), np.zeros((50, 50, 3), np.uint8))  # any extension
    assert load_voc(voc_root, "test").records[1].file_name.endswith("000002.png")
    with open(os.path.join(voc_root, "Annotations", "000003.xml"), "w") as f:
        f.write("<annotation><size><width>30</width>")
    with pytest.raises(DatasetFormatError, match=r"000003\.xml: not valid XML"):
        voc_to_coco(voc_root, "test")
    os.remove(os.path.join(voc_root, "Annotations", "000003.xml"))
    with pytest.raises(FileNotFoundError, match=r"lists '000003' but .*000003\.xml does not exist"):
        voc_to_coco(voc_root, "test")


def write_yolo(root, images, split="val", labels=None):
    """images: {stem: (w, h)}; labels: {stem: text}."""
    os.makedirs(os.path.join(root, "images", split), exist_ok=True)
    os.makedirs(os.path.join(root, "labels", split), exist_ok=True)
    for stem, (w, h) in images.items():
        cv2.imwrite(os.path.join(root, "images", split, f"{stem}.png"), np.zeros((h, w, 3), np.uint8))
    for stem, text in (labels or {}).items():
        with open(os.path.join(root, "labels", split, f"{stem}.txt"), "w") as f:
            f.write(text)


@pytest.fixture
def yolo_root(tmp_path):
    root = str(tmp_path / "yolo")
    write_yolo(root, {"a": (100, 50), "b": (40, 80), "c": (20, 20)},
               labels={"a": "0 0.5 0.5 0.2 0.4\n1 0.95 0.1 0.2 0.2\n", "b": "\n1 0.25 0.5 0.5 0.25\n"})
    with open(os.path.join(root, "data.yaml"), "w") as f:
        f.write("names:\n  0: red blood cell\n  1: platelet\n")
    return root


def test_yolo_reads_normalised_boxes_and_names(yolo_root):
    info = load_yolo(yolo_root, os.path.join(yolo_root, "data.yaml"), "val", name="yolo_t")
    assert info.class_names == ["red blood cell", "platelet"] and len(info) == 3
    a, b, c = info.records
    assert (a.width, a.height) == (100, 50)
    # (0.5, 0.5, 0.2, 0.4) of 100x50 -> (40, 15, 60, 35); the second reaches past the right border: clipped
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35], [85, 0, 100, 10]], atol=1e-4)
    assert a.labels.tolist() == [0, 1] and info.stats["clipped_boxes"] == 1
    np.testing.assert_allclose(b.boxes, [[0, 30, 20, 50]], atol=1e-4)
    assert len(c.boxes) == 0  # no label file: an image without objects
    assert read_names(["x", "y"]) == ["x", "y"]
    with open(os.path.join(yolo_root, "classes.txt"), "w") as f:
        f.write("rbc\nplt\n")
    assert read_names(os.path.join(yolo_root, "classes.txt")) == ["rbc", "plt"]


@pytest.mark.parametrize("text, match", [
    ("2 0.5 0.5 0.1 0.1\n", r"a\.txt:1: class id 2 is out of range: the names list has 2 classes"),
    ("0 0.5 0.5 0.1\n", r"a\.txt:1: expected 'class_id cx cy w h'"),
    ("0 50 25 20 20\n", r"a\.txt:1: cx = 50\.0 is outside 0\.\.1: YOLO coordinates are fractions .* \(100x50\)"),
    ("x 0.5 0.5 0.1 0.1\n", r"a\.txt:1: expected an integer class id"),
    ("0 0.1 0.1 0.2 0.1 0.3 0.3 0.1 0.3\n", r"a\.txt:1: expected 'class_id cx cy w h' \(5 fields; segmentation"),
])
def test_yolo_bad_lines_are_errors_naming_file_and_line(yolo_root, text, match):
    with open(os.path.join(yolo_root, "labels", "val", "a.txt"), "w") as f:
        f.write(text)
    with pytest.raises(DatasetFormatError, match=match):
        load_yolo(yolo_root, ["r", "p"], "val")


def test_yolo_names_map_duplicate_stems_and_exif_rotation(yolo_root):
    with open(os.path.join(yolo_root, "gaps.yaml"), "w") as f:
        f.write("names:\n  0: a\n  2: b\n")
    with pytest.raises(DatasetFormatError, match=r"gaps\.yaml: 'names' ids must be 0\.\.1 without gaps, got \[0, 2\]"):
        read_names(os.path.join(yolo_root, "gaps.yaml"))
    with open(os.path.join(yolo_root, "many.yaml"), "w") as f:
        f.write("names:\n" + "".join(f"  {i}: c{i}\n" for i in range(12)))
    assert read_names(os.path.join(yolo_root, "many.yaml"))[10] == "c10"  # numeric order, not "10" < "2"
    # A photo stored 60x40 with EXIF orientation 6 (turn 90 degrees): OpenCV reads it 40 wide, 60 high.
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (60, 40)).save(os.path.join(yolo_root, "images", "val", "d.jpg"), exif=exif)
    assert cv2.imread(os.path.join(yolo_root, "images", "val", "d.jpg")).shape[:2] == (60, 40)
    record = load_yolo(yolo_root, ["r", "p"], "val").records[3]
    assert (record.width, record.height) == (40, 60)
    cv2.imwrite(os.path.join(yolo_root, "images", "val", "d.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetFormatError, match=r"d\.jpg and d\.png would share the label file d\.txt"):
        load_yolo(yolo_root, ["r", "p"], "val")


def test_evaluating_merged_sets_without_one_ground_truth_is_a_clear_error(voc_root):
    from retdet.data import merge_datasets

    try:
        register_voc("t_voc_a", voc_root, "test")
        register_voc("t_voc_b", voc_root, "test")
        merged = merge_datasets(["t_voc_a", "t_voc_b"])
        evaluator = COCOEvaluator(dataset=merged, plots=False)
        evaluator.process([ImageSample(image=torch.zeros(3, 4, 4), image_id=1)], [Detections()])
        with pytest.raises(ValueError, match=r"no single ground truth .* one dataset at a time"):
            evaluator.evaluate()
    finally:
        for name in ("t_voc_a", "t_voc_b"):
            _LOADERS.pop(name, None)
            _CACHE.pop(name, None)


def test_yolo_label_without_image_and_missing_folders(yolo_root):
    with open(os.path.join(yolo_root, "labels", "val", "zzz.txt"), "w") as f:
        f.write("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetFormatError, match=r"zzz\.txt: a label file without an image"):
        load_yolo(yolo_root, ["r", "p"], "val")
    with pytest.raises(FileNotFoundError, match=r"YOLO folder not found: .*images/train"):
        load_yolo(yolo_root, ["r", "p"], "train")


def test_register_from_config_voc_and_yolo(voc_root, yolo_root):
    try:
        register_from_config([dict(name="t_voc", format="voc", root=voc_root, split="test"),
                              dict(name="t_yolo", format="yolo", root=yolo_root, names=["r", "p"], split="val")])
        assert get_dataset("t_voc").num_boxes == 2 and get_dataset("t_yolo").num_boxes == 3
        with pytest.raises(KeyError, match=r"format 'yolo'.*lacks \['names'\]"):
            register_from_config([dict(name="t_y2", format="yolo", root=yolo_root)])
        with pytest.raises(KeyError, match=r"unknown key\(s\) \['image_root'\]"):
            register_from_config([dict(name="t_v2", format="voc", root=voc_root, split="test", image_root="x")])
        with pytest.raises(ValueError, match=r"format must be one of \['coco', 'voc', 'yolo'\], got 'kitti'"):
            register_from_config([dict(name="t_k", format="kitti", root=voc_root)])
        register_voc("t_voc", voc_root, "test", overwrite=True)
        register_yolo("t_yolo", yolo_root, ["r", "p"], "val", overwrite=True)
    finally:
        for name in ("t_voc", "t_yolo"):
            _LOADERS.pop(name, None)
            _CACHE.pop(name, None)


def test_voc_ap_by_hand():
    """Class with objects A (image 1), B (image 1, difficult), C (image 2). Detections by score:
    A (TP), B (difficult: skipped), A again (FP), nothing (FP), C (TP): recall .5 .5 .5 1,
    precision 1 .5 1/3 .5. 11-point: (6 x 1 + 5 x 0.5) / 11; area: 0.5 x 1 + 0.5 x 0.5."""
    box = np.array([0.0, 0.0, 10.0, 10.0])
    gts = {1: (np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([False, True])),
           2: (np.array([[0, 0, 10, 10]], float), np.array([False]))}
    dets = [(1, 0.9, box), (1, 0.8, np.array([20.0, 20, 30, 30])), (1, 0.7, box), (2, 0.6, box + 50), (2, 0.5, box)]
    recall, precision, npos = class_recall_precision(gts, dets)
    assert npos == 2
    np.testing.assert_allclose(recall, [0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(precision, [1.0, 0.5, 1 / 3, 0.5])
    assert voc_ap(recall, precision, use_11_point=True) == pytest.approx(8.5 / 11)
    assert voc_ap(recall, precision, use_11_point=False) == pytest.approx(0.75)
    # IoU 100/201 (just below 0.5) is a miss, 100/199 a hit
    r, p, _ = class_recall_precision({1: (np.array([[0, 0, 10, 20.1]]), np.array([False]))}, [(1, 0.9, box)])
    assert r.tolist() == [0.0] and p.tolist() == [0.0]
    r, p, _ = class_recall_precision({1: (np.array([[0, 0, 10, 19.9]]), np.array([False]))}, [(1, 0.9, box)])
    assert r.tolist() == [1.0] and p.tolist() == [1.0]


def test_evaluator_on_voc_gives_coco_and_voc_metrics(voc_root):
    info = load_voc(voc_root, "test", class_names=["cat", "dog"], name="voc_eval")
    evaluator = COCOEvaluator(dataset=info, plots=False)
    for r in info.records:  # perfect detections, plus one false positive on the empty image
        boxes, labels = torch.tensor(r.boxes).reshape(-1, 4), torch.tensor(r.labels)
        scores = torch.linspace(0.9, 0.5, len(boxes))
        if len(boxes) == 0:
            boxes, labels, scores = torch.tensor([[1.0, 1.0, 9.0, 9.0]]), torch.tensor([0]), torch.tensor([0.1])
        det = Detections(boxes=boxes, scores=scores, labels=labels)
        evaluator.process([ImageSample(image=torch.zeros(3, r.height, r.width), image_id=r.image_id)], [det])
    results = evaluator.evaluate()
    # the false positive scores below every true one: AP stays 100 (the difficult cat is ignored)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["voc"] == {"mAP50_voc07": pytest.approx(100.0), "mAP50_area": pytest.approx(100.0)}
    # the same numbers from the converted COCO json
    voc = voc_detection_map(info.coco, [{"image_id": 1, "category_id": 2, "bbox": [0, 0, 20, 30], "score": 1.0}], [1, 2, 3])
    assert voc["per_class"][2] == (pytest.approx(100.0), pytest.approx(100.0)) and voc["per_class"][1] == (0.0, 0.0)


def test_convert_dataset_tool_writes_coco_json(voc_root, yolo_root, tmp_path, capsys):
    convert_main(["--format", "voc", "--root", voc_root, "--split", "test", "--output", str(tmp_path / "voc.json")])
    data = json.loads((tmp_path / "voc.json").read_text())
    assert data == voc_to_coco(voc_root, "test") and "3 images, 2 boxes" in capsys.readouterr().out
    convert_main(["--format", "yolo", "--root", yolo_root, "--split", "val", "--names",
                  os.path.join(yolo_root, "data.yaml"), "--output", str(tmp_path / "yolo.json")])
    out = capsys.readouterr().out
    assert "3 images, 3 boxes, 2 classes" in out and "clipped_boxes" in out
    with pytest.raises(SystemExit):
        convert_main(["--format", "yolo", "--root", yolo_root, "--output", str(tmp_path / "x.json")])  # no --names
